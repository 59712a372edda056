"""Train or fine-tune an open_clip model on captioned images; write it as a ``local-dir`` model.

Data is a folder of images with sidecar captions (``x.jpg`` + ``x.txt``, one caption per
line), or a CSV / JSONL file of image paths and captions (several captions per image allowed:
repeat the row, or give JSONL ``"captions": [...]``). Images are decoded once, in the same
worker processes as indexing, into a uint8 cache beside the output (memory-mapped, so it need
not fit in RAM); epochs then read batches from it.

Training follows CLIP: the symmetric contrastive loss from open_clip (sigmoid loss for SigLIP
models), AdamW without weight decay on gains, biases and the temperature, linear warm-up then
cosine decay, and a held-out split of images on which text-to-image and image-to-text
recall@1/5/10 are reported after every epoch. Each epoch writes a resumable checkpoint and the
current weights in open_clip's ``local-dir`` layout, so ``--model local-dir:OUT`` works at once.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .encoders import DEFAULT_MODEL, ModelSpec
from .errors import InputError, RetrievalError
from .ingest import FileError
from .ingest.workers import DecodeTask, decoded, worker_count
from .media import DEFAULT_MAX_PIXELS, ImageSpec

CAPTION_COLUMNS = ("caption", "text", "title", "captions")
IMAGE_COLUMNS = ("image", "path", "filepath", "file", "filename", "image_path")
RECALL_KS = (1, 5, 10)


class TrainingError(RetrievalError):
    """Training cannot start or continue (too little data, incompatible checkpoint)."""


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in checkpoints, checked on resume)."""

    data: str
    out: str
    model: str = DEFAULT_MODEL.name
    pretrained: str | None = DEFAULT_MODEL.pretrained
    from_scratch: bool = False  # model is an open_clip architecture name or a config JSON file
    lock_image: bool = False
    lock_text: bool = False
    epochs: int = 5
    batch_size: int = 64
    lr: float | None = None  # default: 5e-4 from scratch, 1e-5 when fine-tuning
    weight_decay: float = 0.1
    warmup_steps: int | None = None  # default: 5% of all steps
    seed: int = 0
    val_fraction: float = 0.1
    workers: int | None = None
    device: str = "auto"
    max_pixels: int = DEFAULT_MAX_PIXELS
    keep_checkpoints: int = 1
    half_weights: bool = False  # write the final weights as float16 (half the size)

    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return 5e-4 if self.from_scratch else 1e-5


@dataclass(frozen=True)
class TrainProgress:
    """A progress report: phase is decode, train or eval."""

    phase: str
    epoch: int
    epochs: int
    step: int = 0
    steps: int = 0
    loss: float | None = None
    lr: float | None = None
    metrics: dict[str, float] | None = None


@dataclass
class TrainResult:
    """What a run produced: the model folder, its spec, and per-epoch metrics."""

    out: Path
    model: str
    epochs: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[FileError] = field(default_factory=list)
    train_images: int = 0
    val_images: int = 0


# --- data ------------------------------------------------------------------------------------

def read_pairs(data: str | os.PathLike[str]) -> tuple[dict[str, list[str]], list[FileError]]:
    """Image path -> captions, from a folder with sidecars or a CSV / JSONL file."""
    src = Path(data).expanduser()
    errors: list[FileError] = []
    pairs: dict[str, list[str]] = {}

    def add(image: str, captions: Sequence[str], where: str) -> None:
        path = str((src.parent / image).absolute()) if not os.path.isabs(image) else image
        caps = [" ".join(c.split()) for c in captions if isinstance(c, str) and c.strip()]
        if not caps:
            errors.append(FileError(where, "empty caption"))
            return
        if not os.path.isfile(path):
            errors.append(FileError(path, "image file not found"))
            return
        pairs.setdefault(path, []).extend(caps)

    if src.is_dir():
        from .ingest.scan import scan

        found = scan([src])
        errors += [FileError(p, r) for p, r in found.errors]
        for path in found.images:
            cap = found.captions.get(path)
            if cap is None:
                errors.append(FileError(path, "no caption file beside it"))
                continue
            try:
                lines = Path(cap.path).read_text(encoding="utf-8-sig").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                errors.append(FileError(cap.path, f"unreadable caption ({exc})"))
                continue
            add(path, lines, cap.path)
    elif src.is_file() and src.suffix.lower() in (".jsonl", ".ndjson"):
        for n, line in enumerate(src.read_text(encoding="utf-8-sig").splitlines(), 1):
            if not line.strip():
                continue
            where = f"{src}:{n}"
            try:
                obj = json.loads(line)
                image = next(obj[k] for k in IMAGE_COLUMNS if k in obj)
            except (ValueError, StopIteration, TypeError):
                errors.append(FileError(where, "expected a JSON object with an image path"))
                continue
            caps = obj.get("captions") or [obj.get("caption") or obj.get("text") or ""]
            add(str(image), caps if isinstance(caps, list) else [str(caps)], where)
    elif src.is_file() and src.suffix.lower() in (".csv", ".tsv"):
        with open(src, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f, delimiter="\t" if src.suffix.lower() == ".tsv" else ",")
            cols = {c.lower().strip(): c for c in reader.fieldnames or []}
            img_col = next((cols[c] for c in IMAGE_COLUMNS if c in cols), None)
            cap_col = next((cols[c] for c in CAPTION_COLUMNS if c in cols), None)
            if img_col is None or cap_col is None:
                raise InputError(
                    f"{src}: needs an image column ({', '.join(IMAGE_COLUMNS)}) and a caption "
                    f"column ({', '.join(CAPTION_COLUMNS)}); found {list(cols)}")
            for n, row in enumerate(reader, 2):
                add(row.get(img_col) or "", [row.get(cap_col) or ""], f"{src}:{n}")
    elif not src.exists():
        raise InputError(f"{data}: no such file or folder")
    else:
        raise InputError(f"{data}: expected a folder, a .csv/.tsv or a .jsonl file")
    return pairs, errors


def split(paths: Sequence[str], val_fraction: float, seed: int, batch_size: int
          ) -> tuple[list[str], list[str]]:
    """A deterministic split of images into train and validation."""
    if not 0 <= val_fraction < 1:
        raise TrainingError(f"val fraction must be in [0, 1), got {val_fraction}")
    order = sorted(paths)
    random.Random(seed).shuffle(order)
    n_val = round(len(order) * val_fraction)
    if val_fraction > 0 and n_val < 2:
        need = math.ceil(2 / val_fraction)
        raise TrainingError(
            f"too little data: a validation split of {val_fraction:g} needs at least {need} "
            f"usable images, found {len(order)} (add data or lower --val-fraction)")
    train = order[n_val:]
    if len(train) < 2:
        raise TrainingError(
            f"too little data: {len(train)} training image(s) left after the validation split "
            "(contrastive training needs at least 2 per batch)")
    return train, order[:n_val]


def _fingerprint(items: Sequence[Any]) -> str:
    return hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()[:16]


def decode_cache(paths: Sequence[str], spec: ImageSpec, folder: Path, workers: int | None,
                 max_pixels: int, progress: Callable[[int], None]
                 ) -> tuple[np.ndarray, list[str], list[FileError]]:
    """Decode images once into a memory-mapped uint8 array (N, H, W, 3) under ``folder``.

    Returns the array, the paths it holds (in order), and the images that failed. A cache made
    for the same paths and preprocessing is reused (resuming does not decode again)."""
    key = _fingerprint([list(paths), asdict(spec)])
    folder.mkdir(parents=True, exist_ok=True)
    data_file, meta_file = folder / f"pixels-{key}.npy", folder / f"pixels-{key}.json"
    if data_file.exists() and meta_file.exists():
        meta = json.loads(meta_file.read_text())
        arr = np.load(data_file, mmap_mode="r")
        return arr, meta["paths"], [FileError(**e) for e in meta["errors"]]
    for old in folder.glob("pixels-*"):
        old.unlink()
    h, w = spec.size
    tmp = folder / f".pixels-{key}.npy.tmp"
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), h, w, 3))
    kept: list[str] = []
    errors: list[FileError] = []
    tasks = [DecodeTask(p, 0, 0) for p in paths]
    n_workers = worker_count(workers)
    for i, res in enumerate(decoded(tasks, spec=spec, max_pixels=max_pixels, workers=n_workers,
                                    window=4 * n_workers)):
        if res.error is not None or res.pixels is None:
            errors.append(FileError(res.path, res.error or "cannot decode image"))
        else:
            arr[len(kept)] = res.pixels
            kept.append(res.path)
        if i % 256 == 0:
            progress(i)
    arr.flush()
    del arr
    os.replace(tmp, data_file)
    meta_file.write_text(json.dumps({"paths": kept, "errors": [asdict(e) for e in errors]}))
    progress(len(paths))
    return np.load(data_file, mmap_mode="r"), kept, errors


# --- model -------------------------------------------------------------------------------------

def _build_model(cfg: TrainConfig, device: str) -> tuple[Any, Any, dict[str, Any]]:
    """(model, tokenizer, model_cfg) for a fine-tune or a from-scratch run."""
    import open_clip

    from .encoders import LOCAL_DIR_PREFIX, check_architecture
    from .encoders.openclip import create_open_clip

    if not cfg.from_scratch:
        spec = ModelSpec.parse(cfg.model, cfg.pretrained)
        if spec.random_weights:
            raise TrainingError(
                f"fine-tuning {cfg.model} needs --pretrained weights; use --from-scratch to "
                "train it from random initialisation")
        loaded = create_open_clip(spec, device)
        return loaded.model, loaded.tokenizer, loaded.config["model_cfg"]
    config_path = Path(cfg.model).expanduser()
    if config_path.suffix == ".json":
        try:
            raw = json.loads(config_path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"{cfg.model}: cannot read model config ({exc})") from None
        model_cfg = raw.get("model_cfg", raw)
    elif cfg.model.startswith(LOCAL_DIR_PREFIX):
        raw = json.loads(
            (Path(cfg.model[len(LOCAL_DIR_PREFIX):]) / "open_clip_config.json").read_text())
        model_cfg = raw["model_cfg"]
    else:
        model_cfg = open_clip.get_model_config(check_architecture(cfg.model))
    # Build through open_clip's local-dir path from the config written into the output, so the
    # model trained is exactly the one `local-dir:OUT` will load.
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    _write_config(out, model_cfg, None)
    import logging

    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # open_clip warns that no weights were found: expected here
    try:
        model = open_clip.create_model(f"{LOCAL_DIR_PREFIX}{out}", device=device)
    finally:
        quiet.setLevel(level)
    tokenizer = open_clip.get_tokenizer(f"{LOCAL_DIR_PREFIX}{out}")
    return model, tokenizer, model_cfg


def _write_config(out: Path, model_cfg: dict[str, Any], preprocess: dict[str, Any] | None) -> None:
    doc: dict[str, Any] = {"model_cfg": model_cfg}
    if preprocess:
        doc["preprocess_cfg"] = preprocess
    _atomic_write(out / "open_clip_config.json", json.dumps(doc, indent=2).encode())


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _image_spec(model: Any) -> ImageSpec:
    import open_clip

    from .encoders.openclip import image_spec_from_cfg

    return image_spec_from_cfg(open_clip.get_model_preprocess_cfg(model))


def _param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exclude = p.ndim < 2 or "logit_scale" in name or "logit_bias" in name or \
            "positional_embedding" in name or "token_embedding" in name or name.endswith(".bias")
        (no_decay if exclude else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def _lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * base * (1 + math.cos(math.pi * min(1.0, progress)))


# --- evaluation -------------------------------------------------------------------------------

def recall_at_k(image_emb: np.ndarray, text_emb: np.ndarray, text_image: np.ndarray,
                ks: Sequence[int] = RECALL_KS) -> dict[str, float]:
    """Text-to-image and image-to-text recall@k.

    ``text_image[j]`` is the index of the image caption ``j`` describes. Text-to-image: a
    caption scores when its image is in the top k. Image-to-text: an image scores when any of
    its captions is in the top k."""
    sims = text_emb @ image_emb.T  # (texts, images)
    out: dict[str, float] = {}
    t2i_rank = np.argsort(-sims, axis=1)
    i2t_rank = np.argsort(-sims.T, axis=1)
    for k in ks:
        out[f"t2i_r@{k}"] = float(np.mean([text_image[j] in t2i_rank[j, :k]
                                           for j in range(len(text_emb))]))
        out[f"i2t_r@{k}"] = float(np.mean([np.any(text_image[i2t_rank[i, :k]] == i)
                                           for i in range(len(image_emb))]))
    return out


def _evaluate(model: Any, tokenizer: Any, pixels: np.ndarray, captions: list[list[str]],
              spec: ImageSpec, device: str, batch: int = 256) -> dict[str, float]:
    import torch

    from .encoders.openclip import pixels_to_tensor

    model.eval()
    with torch.inference_mode():
        imgs = [model.encode_image(pixels_to_tensor(pixels[i:i + batch], spec, device),
                                   normalize=True).float().cpu().numpy()
                for i in range(0, len(pixels), batch)]
        texts = [c for caps in captions for c in caps]
        owner = np.asarray([i for i, caps in enumerate(captions) for _ in caps])
        txts = [model.encode_text(tokenizer(texts[i:i + batch]).to(device), normalize=True)
                .float().cpu().numpy() for i in range(0, len(texts), batch)]
    model.train()
    return recall_at_k(np.concatenate(imgs), np.concatenate(txts), owner)


# --- the run -----------------------------------------------------------------------------------

def _save_weights(model: Any, out: Path, half: bool) -> None:
    from safetensors.torch import save_file

    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    tmp = out / ".open_clip_model.safetensors.tmp"
    save_file(state, str(tmp))
    os.replace(tmp, out / "open_clip_model.safetensors")
    for stale in ("open_clip_pytorch_model.bin",):
        with contextlib.suppress(FileNotFoundError):
            (out / stale).unlink()


def _latest_checkpoint(out: Path) -> Path | None:
    ckpts = sorted((out / "checkpoints").glob("epoch_*.pt"),
                   key=lambda p: int(p.stem.split("_")[1]))
    return ckpts[-1] if ckpts else None


def train(cfg: TrainConfig, *, resume: bool = False,
          progress: Callable[[TrainProgress], None] | None = None) -> TrainResult:
    """Run (or resume) training; returns where the model is and what it measured."""
    import torch

    from .encoders.openclip import pixels_to_tensor, resolve_device

    report = progress or (lambda _p: None)
    out = Path(cfg.out).expanduser().absolute()
    cfg.out = str(out)
    if cfg.epochs < 1 or cfg.batch_size < 2:
        raise TrainingError("epochs must be >= 1 and batch size >= 2")
    ckpt_path = _latest_checkpoint(out) if resume else None
    if resume and ckpt_path is None:
        raise TrainingError(f"nothing to resume: no checkpoint under {out / 'checkpoints'}")
    if not resume and _latest_checkpoint(out) is not None:
        raise TrainingError(f"{out} already holds a training run; pass --resume to continue it "
                            "or choose another --out")
    device = resolve_device(cfg.device)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    pairs, skipped = read_pairs(cfg.data)
    train_paths, val_paths = split(list(pairs), cfg.val_fraction, cfg.seed, cfg.batch_size)
    model, tokenizer, model_cfg = _build_model(cfg, device)
    spec = _image_spec(model)
    import open_clip

    preprocess_cfg = dict(open_clip.get_model_preprocess_cfg(model))
    report(TrainProgress("decode", 0, cfg.epochs, 0, len(pairs)))
    all_paths = train_paths + val_paths
    pixels, kept, bad = decode_cache(
        all_paths, spec, out / "cache", cfg.workers, cfg.max_pixels,
        lambda n: report(TrainProgress("decode", 0, cfg.epochs, n, len(all_paths))))
    skipped += bad
    row = {p: i for i, p in enumerate(kept)}
    train_rows = [row[p] for p in train_paths if p in row]
    val_rows = [row[p] for p in val_paths if p in row]
    if len(train_rows) < 2:
        raise TrainingError("too little data: fewer than 2 readable training images")

    if cfg.lock_image:
        model.lock_image_tower(unlocked_groups=0)
    if cfg.lock_text:
        model.lock_text_tower(unlocked_layers=0)
    if cfg.lock_image and cfg.lock_text:
        raise TrainingError("both towers are locked: nothing would be trained")
    loss_fn = open_clip.SigLipLoss() if getattr(model, "logit_bias", None) is not None \
        else open_clip.ClipLoss()
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay),
                                  lr=cfg.learning_rate(), betas=(0.9, 0.98), eps=1e-6)
    batch = min(cfg.batch_size, len(train_rows))
    steps_per_epoch = len(train_rows) // batch
    total = steps_per_epoch * cfg.epochs
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else max(1, total // 20)
    result = TrainResult(out, f"local-dir:{out}", skipped=skipped,
                         train_images=len(train_rows), val_images=len(val_rows))
    start_epoch, step = 0, 0
    data_key = _fingerprint([train_paths, val_paths])
    if ckpt_path is not None:
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        saved = state["config"]
        for k in ("model", "pretrained", "from_scratch", "batch_size", "epochs", "seed"):
            if saved.get(k) != getattr(cfg, k):
                raise TrainingError(f"cannot resume: {k} was {saved.get(k)!r} in the "
                                    f"checkpoint, {getattr(cfg, k)!r} now")
        if state["data_key"] != data_key:
            raise TrainingError("cannot resume: the training data changed since the checkpoint")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, step = state["epoch"], state["step"]
        result.epochs = state["history"]
        torch.set_rng_state(state["torch_rng"])

    val_caps = [pairs[kept[r]] for r in val_rows]
    val_pixels = pixels[val_rows] if val_rows else None
    model.train()
    for epoch in range(start_epoch, cfg.epochs):
        # One generator per epoch: a resumed run shuffles and samples captions exactly as an
        # uninterrupted one would.
        rng = np.random.default_rng([cfg.seed, epoch])
        order = np.asarray(train_rows)[rng.permutation(len(train_rows))]
        t0 = time.perf_counter()
        losses = []
        for b in range(steps_per_epoch):
            rows = np.sort(order[b * batch:(b + 1) * batch])
            caps = [pairs[kept[r]][int(rng.integers(len(pairs[kept[r]])))] for r in rows]
            lr = _lr_at(step, total, warmup, cfg.learning_rate())
            for g in optimizer.param_groups:
                g["lr"] = lr
            images = pixels_to_tensor(np.asarray(pixels[rows]), spec, device)
            tokens = tokenizer(caps).to(device)
            out_t = model(images, tokens)
            loss = loss_fn(*out_t) if isinstance(out_t, tuple) else loss_fn(**out_t)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            step += 1
            losses.append(loss.item())
            report(TrainProgress("train", epoch + 1, cfg.epochs, b + 1, steps_per_epoch,
                                 losses[-1], lr))
        metrics = _evaluate(model, tokenizer, val_pixels, val_caps, spec, device) \
            if val_pixels is not None else {}
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else None,
                  "seconds": round(time.perf_counter() - t0, 1), **metrics}
        result.epochs.append(record)
        report(TrainProgress("eval", epoch + 1, cfg.epochs, steps_per_epoch, steps_per_epoch,
                             record["loss"], None, metrics))
        # The model folder is usable after every epoch; the checkpoint makes it resumable.
        _write_config(out, model_cfg, preprocess_cfg)
        _save_weights(model, out, cfg.half_weights and epoch + 1 == cfg.epochs)
        _save_checkpoint(out, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "epoch": epoch + 1, "step": step, "config": asdict(cfg), "data_key": data_key,
            "history": result.epochs, "torch_rng": torch.get_rng_state(),
        }, epoch + 1, cfg.keep_checkpoints)
    (out / "metrics.json").write_text(json.dumps(result.epochs, indent=1))
    return result


def _save_checkpoint(out: Path, state: dict[str, Any], epoch: int, keep: int) -> None:
    import torch

    folder = out / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".epoch_{epoch}.pt.tmp"
    torch.save(state, tmp)
    os.replace(tmp, folder / f"epoch_{epoch}.pt")
    ckpts = sorted(folder.glob("epoch_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
    for old in ckpts[:-max(1, keep)]:
        old.unlink()
