"""The demo captioner: a small CoCa trained from scratch on the synthetic shapes, and its checks.

The shipped model (``--captioner demo-captioner``) lives in ``retrieval/models/demo-captioner``
in open_clip's ``local-dir`` layout (float16 weights). It is reproduced by::

    python -m retrieval.training.demo_captioner --out retrieval/models/demo-captioner

which generates captioned training images with :mod:`retrieval.training.synthetic`, trains with
``retrieval.train`` (CoCa's captioning + contrastive loss, fixed seed), zeroes the embeddings of
tokens no caption uses (:func:`compact`, so the weights compress), and measures the captions it
writes for freshly generated images it never saw: the share whose colour and shape words name
the image's objects, and BLEU-4 against the reference captions (with NLTK installed).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..encoders.spec import DEMO_CAPTIONER_DIR
from ..fileio import scratch_folder
from .synthetic import COLOURS, SHAPES, read_scenes, write_dataset

IMAGE_SIZE = 64
# A 3-layer ViT with 8-pixel patches (64 tokens) whose attentional pooler gives the contrastive
# vector and 16 tokens for the decoder; 2-layer text encoder and decoder, all of width 64
# (6.8 M parameters, 6.3 M of them the two 49408-token vocabulary tables). Measured: colour,
# size and position are learned within a few epochs; shape takes the ViT far longer (one-object
# shape right for 0.33 of fresh images after 5 epochs, 0.53 after 10, 0.92 after 15 of 20,000
# images), so the recipe trains 30 epochs (CoCa needs a ViT: open_clip's ResNet tower outputs
# no tokens for the decoder; 4-pixel patches learned shape no faster per second). The longest
# caption is 20 tokens, so the context is 24 for the text tower and the decoder alike
# (open_clip's CoCa uses 76 for both; the text tower adds its CLS position after them), a third
# of the text tower's cost at 76.
CAPTIONER_ARCH: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": IMAGE_SIZE, "layers": 3, "width": 64, "head_width": 32,
                   "patch_size": 8, "attentional_pool": True, "attn_pooler_queries": 17,
                   "attn_pooler_heads": 2, "output_tokens": True},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 64, "heads": 2,
                 "layers": 2, "embed_cls": True, "output_tokens": True},
    "multimodal_cfg": {"context_length": 24, "vocab_size": 49408, "width": 64, "heads": 2,
                       "layers": 2, "attn_pooler_heads": 2},
    "custom_text": True,
}
EVAL_SEED = 20261130  # held-out images: a seed the training data never uses


@dataclass
class CaptionReport:
    """Generated captions of fresh images, checked word by word against what they show."""

    images: int
    one_object_images: int
    one_object_correct: float  # colour and shape words both right
    one_object_colour: float
    one_object_shape: float
    two_object_images: int
    two_object_correct: float  # both objects named with their colour and shape
    bleu4: float | None  # corpus BLEU-4 against the full reference caption (NLTK)
    seconds_per_image: float
    examples: list[tuple[str, str]]


def write_caption_data(folder: Path, n: int, seed: int) -> Path:
    """Images (once) and a JSONL of each image with its one full caption, the target."""
    if not (folder / "scenes.jsonl").exists():
        write_dataset(folder, n, seed=seed, size=IMAGE_SIZE)
    from ..errors import TrainingError
    from ..ingest.confine import FoundFileError, read_caption_beside

    out = folder / "full-captions.jsonl"
    with open(folder / "scenes.jsonl") as f, open(out, "w") as w:
        for line in f:
            d = json.loads(line)
            try:  # a sidecar found by name: read only inside the folder
                caption = read_caption_beside(str(folder / d["image"])).strip()
            except FoundFileError as exc:
                raise TrainingError(f"{folder / d['image']}: {exc.reason}") from None
            if not caption:
                raise TrainingError(f"{folder / d['image']}: no caption file beside it")
            w.write(json.dumps({"image": d["image"], "caption": caption}) + "\n")
    return out


def build_demo_captioner(out: Path, *, images: int = 20000, epochs: int = 30,
                         batch_size: int = 64, lr: float = 1e-3, seed: int = 0,
                         work: Path | None = None, resume: bool = False,
                         progress: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Generate training data, train the demo captioner from scratch into ``out``; returns the
    training history and timings. Only the model files are left in ``out``."""
    from .loop import TrainConfig, train

    with scratch_folder(work) as work:
        t0 = time.perf_counter()
        data = write_caption_data(work / "data", images, seed)
        arch = work / "demo-coca.json"
        arch.write_text(json.dumps(CAPTIONER_ARCH))
        generated = time.perf_counter() - t0
        staging = work / "model"
        cfg = TrainConfig(
            data=str(data), out=str(staging), model=str(arch), pretrained=None,
            from_scratch=True, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=0.1,
            seed=seed, val_fraction=0.05, half_weights=True, caption_vocab="data",
            early_stop=False)
        t1 = time.perf_counter()
        result = train(cfg, resume=resume, progress=progress)
        trained = time.perf_counter() - t1
        out.mkdir(parents=True, exist_ok=True)
        for name in ("open_clip_config.json", "open_clip_model.safetensors"):
            shutil.copy(staging / name, out / name)
        compact(out, data)
        return {"history": result.epochs, "generate_s": round(generated, 1),
                "train_s": round(trained, 1), "train_images": result.train_images,
                "val_images": result.val_images}


def compact(folder: Path, data: Path) -> int:
    """Zero the token embeddings of tokens the captions never use (their random start values,
    never trained: no caption holds them) so the weights compress in git; returns how many
    tokens are kept. The decoder's columns for them are constant already (objectives.pin)."""
    import open_clip
    from safetensors.torch import load_file, save_file

    from .objectives import caption_vocabulary

    captions = [json.loads(line)["caption"] for line in data.read_text().splitlines() if line]
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    vocab = caption_vocabulary(tokenizer, captions)
    path = folder / "open_clip_model.safetensors"
    state = load_file(str(path))
    table = state["text.token_embedding.weight"]
    keep = table.new_zeros(table.shape[0], dtype=bool)
    keep[vocab] = True
    table[~keep] = 0
    save_file(state, str(path))
    return len(vocab)


def _named(words: list[str], colour: str, shape: str) -> bool:
    """Whether ``colour`` is followed by ``shape`` (an optional size word between)."""
    return any(w == colour and shape in words[i + 1:i + 2] for i, w in enumerate(words))


def evaluate_captions(model: str = "demo-captioner", *, n: int = 400, seed: int = EVAL_SEED,
                      work: Path | None = None, options: Any = None) -> CaptionReport:
    """Caption ``n`` fresh images with ``model`` (default generation options: beam search)
    and check colour and shape words."""
    import numpy as np

    from ..encoders.captioner import load_captioner
    from ..encoders.generation import GenerationOptions
    from ..media import load_image

    with scratch_folder(work) as work:
        folder = work / "caption-eval"
        write_dataset(folder, n, seed=seed, size=IMAGE_SIZE)
        scenes = read_scenes(folder)
        captioner = load_captioner(model)
        paths = sorted(scenes)
        t0 = time.perf_counter()
        texts: list[str] = []
        for start in range(0, len(paths), 64):
            pixels = np.stack([load_image(p, captioner.image_spec)[0]
                               for p in paths[start:start + 64]])
            texts += captioner.generate(pixels, options or GenerationOptions())
        per_image = (time.perf_counter() - t0) / max(1, len(paths))
        return _report(paths, texts, scenes, per_image)


def _report(paths: list[str], texts: list[str], scenes: dict[str, Any],
            per_image: float) -> CaptionReport:
    one = [0, 0, 0, 0]  # images, correct, colour, shape
    two = [0, 0]
    refs: list[str] = []
    for path, text in zip(paths, texts, strict=True):
        scene = scenes[path]
        words = text.lower().split()
        refs.append(scene.caption())
        if len(scene.things) == 1:
            t = scene.things[0]
            one[0] += 1
            one[1] += _named(words, t.colour, t.shape)
            one[2] += t.colour in words and not (set(words) & set(COLOURS) - {t.colour})
            one[3] += t.shape in words and not (set(words) & set(SHAPES) - {t.shape})
        else:
            two[0] += 1
            two[1] += all(_named(words, t.colour, t.shape) for t in scene.things)
    return CaptionReport(
        images=len(paths), one_object_images=one[0],
        one_object_correct=one[1] / max(1, one[0]), one_object_colour=one[2] / max(1, one[0]),
        one_object_shape=one[3] / max(1, one[0]), two_object_images=two[0],
        two_object_correct=two[1] / max(1, two[0]), bleu4=_bleu(texts, refs),
        seconds_per_image=round(per_image, 4),
        examples=[(Path(p).name, t) for p, t in list(zip(paths, texts, strict=True))[:5]])


def _bleu(texts: list[str], refs: list[str]) -> float | None:
    """Corpus BLEU-4 (NLTK's, uniform weights, no smoothing) against the one reference
    caption; None without NLTK."""
    try:
        from nltk.translate.bleu_score import corpus_bleu  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError:
        return None
    score = corpus_bleu([[r.split()] for r in refs], [t.split() for t in texts])
    return round(float(score), 4)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Train the demo captioner and check its captions.")
    ap.add_argument("--out", type=Path, default=DEMO_CAPTIONER_DIR)
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: temp)")
    ap.add_argument("--resume", action="store_true",
                    help="continue an interrupted run from its last checkpoint in --work")
    ap.add_argument("--eval-only", action="store_true", help="only measure the model in --out")
    ap.add_argument("--eval-images", type=int, default=400)
    args = ap.parse_args(argv)

    def show(p: Any) -> None:
        if p.phase == "eval":
            metrics = " ".join(f"{k} {v:.3f}" for k, v in (p.metrics or {}).items())
            loss = f" loss {p.loss:.4f}" if p.loss is not None else " (before training)"
            print(f"epoch {p.epoch}/{p.epochs}{loss} {metrics}", flush=True)
        elif p.phase == "train" and p.step % 20 == 0:
            print(f"  epoch {p.epoch} step {p.step}/{p.steps} loss {p.loss:.4f}", flush=True)

    if not args.eval_only:
        info = build_demo_captioner(args.out, images=args.images, epochs=args.epochs,
                                    batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                    work=args.work, resume=args.resume, progress=show)
        print(f"generated {args.images} images in {info['generate_s']}s, trained "
              f"{args.epochs} epochs in {info['train_s']}s")
    size = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"model files in {args.out}: {size / 1e6:.1f} MB")
    report = evaluate_captions(f"local-dir:{args.out}", n=args.eval_images)
    print(json.dumps(asdict(report), indent=1))
    print("caption bar (>= 0.9 of one-object images named right):",
          "met" if report.one_object_correct >= 0.9 else "NOT met")


if __name__ == "__main__":
    main()
