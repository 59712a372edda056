"""Fine-tuning with the default settings on real labelled images: scikit-learn's digits.

scikit-learn ships 1,797 handwritten digits (8x8 pixels, ten classes) inside its wheel, so this
runs offline. Each image is written as a 64x64 PNG with the sidecar caption "a photo of the
digit seven" (label-like captions: about 180 images share each one). A fifth of the images is
held out; the rest is fine-tuned on with ``retrieval train FOLDER --model demo --out DIR`` and
no other flag. Measured through the engine on the held-out fifth, before and after:

* text-to-image precision@10 of the ten queries "a photo of the digit X";
* image-to-text accuracy: the best of the ten captions is the image's own.

    pip install scikit-learn
    python benchmarks/finetune_digits.py [--model demo] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def write_digits(folder: Path, *, size: int = 64, holdout: float = 0.2, seed: int = 0,
                 limit: int | None = None) -> tuple[Path, Path, dict[str, int]]:
    """(train folder, held-out folder, label of each held-out image path)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))[:limit]
    n_test = round(len(order) * holdout)
    labels: dict[str, int] = {}
    for rank, i in enumerate(order):
        part = folder / ("test" if rank < n_test else "train")
        part.mkdir(parents=True, exist_ok=True)
        pixels = (digits.images[i] * (255 / 16)).astype(np.uint8)
        img = Image.fromarray(pixels, "L").resize((size, size), Image.Resampling.NEAREST)
        path = part / f"digit_{i:04d}.png"
        img.convert("RGB").save(path)
        path.with_suffix(".txt").write_text(f"a photo of the digit {WORDS[digits.target[i]]}\n")
        if rank < n_test:
            labels[str(path.absolute())] = int(digits.target[i])
    return folder / "train", folder / "test", labels


def measure(model: str, test: Path, labels: dict[str, int], work: Path) -> dict[str, float]:
    """Precision@10 of the ten digit queries and image-to-text accuracy, on ``test``."""
    from retrieval import Collection

    col = Collection(work, model=model)
    col.index([test], captions=False, workers=0)
    captions = [f"a photo of the digit {w}" for w in WORDS]
    col.add_texts(captions)
    precision = []
    for digit, query in enumerate(captions):
        hits = col.search(query, k=10)
        precision.append(sum(labels[h.path] == digit for h in hits if h.path) / 10)
    correct = 0
    for path, digit in labels.items():
        (hit,) = col.search(image=path, target="texts", k=1)
        correct += hit.text == captions[digit]
    col.close()
    return {"precision@10": sum(precision) / len(precision),
            "image_to_text": correct / len(labels)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp())
    train, test, labels = write_digits(work / "digits")
    before = measure(args.model, test, labels, work / "before")
    t0 = time.perf_counter()
    exe = shutil.which("retrieval", path=str(Path(sys.executable).parent)) or "retrieval"
    cmd = [exe, "train", str(train), "--model", args.model, "--out", str(work / "tuned"),
           "--no-progress"]
    run = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    seconds = time.perf_counter() - t0
    print(run.stderr[-3000:], run.stdout, sep="\n")
    if run.returncode:
        raise SystemExit(f"training failed ({run.returncode})")
    after = measure(f"local-dir:{work / 'tuned'}", test, labels, work / "after")
    result = {"model": args.model, "train_images": sum(1 for _ in train.glob("*.png")),
              "held_out": len(labels), "before": before, "after": after,
              "train_seconds": round(seconds, 1), "load_average": os.getloadavg()[0],
              "command": " ".join(cmd[1:])}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
