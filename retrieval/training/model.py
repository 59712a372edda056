"""The model side of training: building it (fine-tune or from scratch), its optimiser's
parameter groups and learning-rate schedule, evaluation, and writing it in open_clip's
``local-dir`` layout.

Training follows CLIP: AdamW without weight decay on gains, biases and the temperature, linear
warm-up then cosine decay; held-out text-to-image and image-to-text recall@1/5/10 after every
epoch.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..encoders import ModelSpec
from ..errors import InputError, TrainingError
from ..fileio import atomic_path, atomic_write
from ..media import ImageSpec

if TYPE_CHECKING:
    from .loop import TrainConfig

RECALL_KS = (1, 5, 10)


def build_model(cfg: TrainConfig, device: str) -> tuple[Any, Any, dict[str, Any]]:
    """(model, tokenizer, model_cfg) for a fine-tune or a from-scratch run."""
    import open_clip

    from ..encoders import LOCAL_DIR_PREFIX, check_architecture
    from ..encoders.openclip import create_open_clip
    from .objectives import init_coca, is_coca

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
    # Build through open_clip's local-dir path from the config the output will hold, so the
    # model trained is exactly the one `local-dir:OUT` will load; from a folder of its own,
    # holding the config alone: open_clip loads any weights it finds beside the config, and
    # the output may hold those of a run killed before its first checkpoint, which a run from
    # scratch must not start from.
    import logging
    import tempfile

    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="retrieval-arch-") as arch:
        write_config(Path(arch), model_cfg, None)
        quiet = logging.getLogger()
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # open_clip warns that no weights were found: expected
        try:
            model = open_clip.create_model(f"{LOCAL_DIR_PREFIX}{arch}", device=device,
                                           weights_only=True)
        finally:
            quiet.setLevel(level)
        tokenizer = open_clip.get_tokenizer(f"{LOCAL_DIR_PREFIX}{arch}")
    if is_coca(model):
        init_coca(model)
    return model, tokenizer, model_cfg


def write_config(out: Path, model_cfg: dict[str, Any], preprocess: dict[str, Any] | None) -> None:
    doc: dict[str, Any] = {"model_cfg": model_cfg}
    if preprocess:
        doc["preprocess_cfg"] = preprocess
    atomic_write(out / "open_clip_config.json", json.dumps(doc, indent=2))


def image_spec(model: Any) -> ImageSpec:
    import open_clip

    from ..encoders.openclip import image_spec_from_cfg

    return image_spec_from_cfg(open_clip.get_model_preprocess_cfg(model))


def param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    decay: list[Any] = []
    no_decay: list[Any] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exclude = p.ndim < 2 or "logit_scale" in name or "logit_bias" in name or \
            "positional_embedding" in name or "token_embedding" in name or name.endswith(".bias")
        (no_decay if exclude else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * base * (1 + math.cos(math.pi * min(1.0, progress)))


def retrieval_recall(image_emb: np.ndarray, text_emb: np.ndarray, text_image: np.ndarray,
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


def evaluate(model: Any, tokenizer: Any, pixels: np.ndarray, captions: list[list[str]],
              spec: ImageSpec, device: str, batch: int = 256) -> dict[str, float]:
    import torch

    from ..encoders.openclip import pixels_to_tensor

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
    return retrieval_recall(np.concatenate(imgs), np.concatenate(txts), owner)


def save_weights(model: Any, out: Path, half: bool) -> None:
    from safetensors.torch import save_file

    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    with atomic_path(out / "open_clip_model.safetensors") as tmp:
        save_file(state, str(tmp))
    for stale in ("open_clip_pytorch_model.bin",):
        with contextlib.suppress(FileNotFoundError):
            (out / stale).unlink()


def halve_weights(out: Path) -> None:
    """Rewrite the model folder's weights as float16 (half the size)."""
    from safetensors.torch import load_file, save_file

    path = out / "open_clip_model.safetensors"
    if not path.exists():
        return
    state = {k: v.half() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))
