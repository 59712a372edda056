"""The offline demo: a small CLIP trained from scratch on synthetic shapes, and its checks.

The shipped model (``--model demo``) lives in ``retrieval/models/demo`` in open_clip's
``local-dir`` layout. It is reproduced by::

    python -m retrieval.training.demo --out retrieval/models/demo

which generates captioned training images with :mod:`retrieval.training.synthetic` (captions in
English and Chinese), trains with ``retrieval.train`` (fixed seeds: an English model from
scratch, then English and Chinese from it), and prints its quality in each language, measured
through the engine on freshly generated images it never saw (index + search, the same path
users take).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..encoders.spec import DEMO_MODEL_DIR
from ..fileio import scratch_folder
from .synthetic import COLOURS, LANGUAGES, SHAPES, ZH, read_scenes, write_dataset

IMAGE_SIZE = 64
# A small convolutional image tower (open_clip's ModifiedResNet, one bottleneck per stage,
# width 16) and a 3-layer text transformer. Measured on two CPU cores: a 4-layer ViT of the
# same cost learned colour in minutes but shape hardly at all, while the CNN separates the five
# shapes after a few hundred steps (README, "The demo model"). float16 weights stay under
# 13 MB, most of it the 49408-token embedding table that open_clip's tokenizer requires.
DEMO_ARCH: dict[str, Any] = {
    "embed_dim": 96,
    "vision_cfg": {"image_size": IMAGE_SIZE, "layers": [1, 1, 1, 1], "width": 16,
                   "head_width": 32},
    # 77 tokens: open_clip's byte-level BPE spends two or three tokens on a Chinese character;
    # the longest Chinese training caption (a background and two objects) takes 77.
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 96, "heads": 3,
                 "layers": 3},
}
EVAL_SEED = 20261129  # held-out images: a seed the training data never uses


@dataclass
class QualityReport:
    """Demo-model quality measured through the engine on fresh images."""

    images: int
    two_attribute_precision: float  # mean precision@10 of "a {colour} {shape}" queries
    two_attribute_min: float
    one_attribute_precision: float  # mean precision@10 of "a {shape}" / "a {colour} shape"
    one_attribute_min: float
    image_to_text_accuracy: float  # top caption among all colour x shape captions is right
    queries: int = 0
    per_query: dict[str, float] = field(default_factory=dict)

    def passed(self, bar: float = 0.9) -> bool:
        return min(self.two_attribute_precision, self.one_attribute_precision,
                   self.image_to_text_accuracy) >= bar


def colour_shape_captions(lang: str = "en") -> dict[str, tuple[str, str]]:
    """Every "a {colour} {shape}" caption in ``lang`` -> (colour, shape)."""
    if lang == "zh":
        return {f"一个{ZH[c]}的{ZH[s]}": (c, s) for c in COLOURS for s in SHAPES}
    return {f"a {c} {s}": (c, s) for c in COLOURS for s in SHAPES}


def _queries(lang: str) -> list[tuple[str, str | None, str | None]]:
    """(query, colour, shape): two attributes, then one."""
    two = [(q, c, s) for q, (c, s) in colour_shape_captions(lang).items()]
    if lang == "zh":
        return two + [(f"一个{ZH[s]}", None, s) for s in SHAPES] + [
            (f"一个{ZH[c]}的图形", c, None) for c in COLOURS]
    return two + [(f"a {s}", None, s) for s in SHAPES] + [
        (f"a {c} shape", c, None) for c in COLOURS]


def evaluate_quality(model: str = "demo", *, n: int = 600, seed: int = EVAL_SEED,
                     work: Path | None = None, k: int = 10, languages: tuple[str, ...] = ("en",)
                     ) -> dict[str, QualityReport]:
    """Generate ``n`` fresh images, index them with ``model`` and measure query quality in
    each language (queries and the captions image-to-text chooses from)."""
    from ..collection import Collection

    with scratch_folder(work) as work:
        images = work / "eval-images"
        write_dataset(images, n, seed=seed, size=IMAGE_SIZE)
        scenes = read_scenes(images)
        col = Collection(work / "eval-collection", model=model)
        col.index([images], captions=False)
        reports = {}
        for lang in languages:
            captions = colour_shape_captions(lang)
            col.add_texts([{"text": t, "lang": lang} for t in captions])
            reports[lang] = _measure(col, scenes, lang, captions, n, k)
        col.close()
        return reports


def _measure(col: Any, scenes: dict[str, Any], lang: str, captions: dict[str, tuple[str, str]],
             n: int, k: int) -> QualityReport:
    per_query: dict[str, float] = {}
    two: list[float] = []
    one: list[float] = []
    for query, colour, shape in _queries(lang):
        if sum(s.matches(colour, shape) for s in scenes.values()) < k:
            continue  # too few matching images in this draw to fill a top-k
        hits = col.search(query, k=k)
        p = sum(scenes[h.path].matches(colour, shape) for h in hits if h.path) / k
        per_query[query] = p
        (two if colour and shape else one).append(p)
    correct = 0
    for path, scene in scenes.items():
        (hit,) = col.search(image=path, target="texts", k=1, filters=[f"lang = {lang}"])
        correct += scene.matches(*captions[hit.text or ""])
    return QualityReport(
        images=n,
        two_attribute_precision=sum(two) / len(two), two_attribute_min=min(two),
        one_attribute_precision=sum(one) / len(one), one_attribute_min=min(one),
        image_to_text_accuracy=correct / len(scenes), queries=len(two) + len(one),
        per_query=per_query)


DEMO_QUERIES = ("a red circle", "a small green triangle", "a blue square at the top left",
                "a yellow star and a purple cross", "a cross",
                "一个红色的圆形", "左上角有一个蓝色的正方形", "一个黄色的星形和一个紫色的十字形")


def prepare_demo(images: Path, collection: Path, *, n: int = 300, seed: int = 7,
                 progress: Callable[[Any], None] | None = None) -> tuple[Any, Any]:
    """Write ``n`` demo images (once) and index them with the demo model.

    Returns (collection, index summary); running it again indexes nothing new."""
    from ..collection import Collection

    if not (images / "scenes.jsonl").exists():
        write_dataset(images, n, seed=seed, size=IMAGE_SIZE)
    col = Collection(collection, model="demo")
    summary = col.index([images], progress=progress)
    col.add_texts([{"text": t, "lang": lang} for lang in ("en", "zh")
                   for t in colour_shape_captions(lang)])
    return col, summary


def build_demo_model(out: Path, *, images: int = 20000, epochs: int = 14,
                     bilingual_epochs: int = 5, batch_size: int = 128, lr: float = 5e-4,
                     bilingual_lr: float = 2e-4, seed: int = 0, work: Path | None = None,
                     init: Path | None = None, resume: bool = False,
                     progress: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Generate training data, train the demo model into ``out``, and return the training
    history and timings. Only the model files are left in ``out``.

    Two stages: an English model from scratch (``epochs``, text context 32: the model shipped
    before Chinese), then ``bilingual_epochs`` on English and Chinese captions of the same
    images, starting from it with the text context widened to 77 (the positions it learned
    are kept). ``init`` starts at the second stage from a first-stage model folder.

    With ``resume``, an interrupted run in ``work`` continues from its last checkpoint (the
    training data already there is reused; the trainer refuses if it changed)."""
    from .loop import TrainConfig, train

    if resume and work is None:
        raise ValueError("resuming needs the work folder of the interrupted run")
    work = Path(work or tempfile.mkdtemp(prefix="retrieval-demo-"))
    t0 = time.perf_counter()
    data = work / "train-images"
    if not (resume and (data / "captions.jsonl").exists()):
        write_dataset(data, images, seed=seed, size=IMAGE_SIZE, languages=LANGUAGES)
    generated = time.perf_counter() - t0
    history: list[Any] = []
    t1 = time.perf_counter()
    if init is None:
        arch = work / "demo-clip-en.json"
        arch.write_text(json.dumps(english_arch()))
        init = work / "stage-en"
        cfg = TrainConfig(
            data=str(data / "captions-en.jsonl"), out=str(init), model=str(arch),
            pretrained=None, from_scratch=True, epochs=epochs, batch_size=batch_size, lr=lr,
            weight_decay=0.1, seed=seed, val_fraction=0.05, half_weights=True, early_stop=False)
        history += train(cfg, resume=resume, progress=progress).epochs
    start = work / "stage-bilingual-start"
    widen_context(Path(init), start, DEMO_ARCH["text_cfg"]["context_length"])
    staging = work / "model"
    cfg = TrainConfig(
        data=str(data / "captions.jsonl"), out=str(staging), model=f"local-dir:{start}",
        pretrained=None, epochs=bilingual_epochs, batch_size=batch_size, lr=bilingual_lr,
        weight_decay=0.1, seed=seed + 1, val_fraction=0.05, half_weights=True,
        early_stop=False)
    result = train(cfg, resume=resume and (staging / "checkpoints").exists(), progress=progress)
    history += result.epochs
    trained = time.perf_counter() - t1
    out.mkdir(parents=True, exist_ok=True)
    for name in ("open_clip_config.json", "open_clip_model.safetensors"):
        shutil.copy(staging / name, out / name)
    return {"history": history, "generate_s": round(generated, 1),
            "train_s": round(trained, 1), "train_images": result.train_images,
            "val_images": result.val_images}


def english_arch() -> dict[str, Any]:
    """The first stage's architecture: the demo model with an English-sized text context."""
    arch = json.loads(json.dumps(DEMO_ARCH))
    arch["text_cfg"]["context_length"] = 32
    return arch


def widen_context(src: Path, dst: Path, context_length: int) -> None:
    """Copy the ``local-dir`` model in ``src`` to ``dst`` with a text tower that reads
    ``context_length`` tokens: learned positions are kept, new ones start as the last one."""
    import torch
    from safetensors.torch import load_file, save_file

    doc = json.loads((src / "open_clip_config.json").read_text())
    old = int(doc["model_cfg"]["text_cfg"]["context_length"])
    doc["model_cfg"]["text_cfg"]["context_length"] = context_length
    state = load_file(str(src / "open_clip_model.safetensors"))
    pos = state["positional_embedding"].float()
    if context_length > old:
        pos = torch.cat([pos, pos[-1:].repeat(context_length - old, 1)])
    state = {k: v.float() for k, v in state.items()}
    state["positional_embedding"] = pos[:context_length].contiguous()
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "open_clip_config.json").write_text(json.dumps(doc, indent=2))
    save_file(state, str(dst / "open_clip_model.safetensors"))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Train the demo model and check its quality.")
    ap.add_argument("--out", type=Path, default=DEMO_MODEL_DIR)
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=14, help="English stage, from scratch")
    ap.add_argument("--bilingual-epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--bilingual-lr", type=float, default=2e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: temp)")
    ap.add_argument("--init", type=Path, default=None,
                    help="skip the English stage: start the bilingual one from this model folder")
    ap.add_argument("--resume", action="store_true",
                    help="continue an interrupted run from its last checkpoint in --work")
    ap.add_argument("--eval-only", action="store_true", help="only measure the model in --out")
    args = ap.parse_args(argv)

    def show(p: Any) -> None:
        if p.phase == "eval" and p.loss is not None:  # epoch 0: before training
            metrics = " ".join(f"{k} {v:.3f}" for k, v in (p.metrics or {}).items())
            print(f"epoch {p.epoch}/{p.epochs} loss {p.loss:.4f} {metrics}", flush=True)

    if not args.eval_only:
        info = build_demo_model(args.out, images=args.images, epochs=args.epochs,
                                bilingual_epochs=args.bilingual_epochs,
                                batch_size=args.batch_size, lr=args.lr,
                                bilingual_lr=args.bilingual_lr, seed=args.seed, work=args.work,
                                init=args.init, resume=args.resume, progress=show)
        print(f"generated {args.images} images in {info['generate_s']}s, trained "
              f"{len(info['history'])} epochs in {info['train_s']}s")
    size = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"model files in {args.out}: {size / 1e6:.1f} MB")
    reports = evaluate_quality(f"local-dir:{args.out}", languages=LANGUAGES)
    for lang, report in reports.items():
        summary = {k: v for k, v in asdict(report).items() if k != "per_query"}
        print(f"[{lang}]", json.dumps(summary, indent=1, ensure_ascii=False))
        worst = sorted(report.per_query.items(), key=lambda kv: kv[1])[:5]
        print(f"[{lang}] weakest queries:", ", ".join(f"{q!r} {p:.1f}" for q, p in worst))
    met = all(r.passed() for r in reports.values())
    print("quality bar (>= 0.9 on all three, in every language):", "met" if met else "NOT met")

if __name__ == "__main__":
    main()
