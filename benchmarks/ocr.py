"""Text in images (OCR): can keyword search find an image by a word printed in it, how fast is
text read, and what does ``index --ocr`` add to indexing.

The images are rendered (``tests/ocr_corpus.py``): English and Chinese needles, each printed in
exactly one image inside a phrase beside distractors, in several fonts and sizes, on plain,
noisy and photo backgrounds (scikit-image's photos; also at a phone camera's 12 MP), rotated up
to 10 degrees, and in screenshots; plus images with no text (photos, crops, drawn scenes).

* quality: the corpus is indexed with ``ocr=True`` (demo model); for each needle,
  ``Collection.search(word, keywords=True)``: is its image first (top-1), in the first five
  (top-5)? Per language and per background.
* engine: every image read by the engine as the project configures it
  (``retrieval.enrich.ocr``) and by variants of that configuration (``--configs``; RapidOCR
  parameters), the variants of one image one after the other so that load touches them alike:
  whether each needle is in its image's text, text found in no-text images, images/s on photos
  without text and on screenshots, and the detector / direction classifier / recogniser split.
* gate: would a cheap first look spare the photos without text? Every image read as the
  project reads it (``recognise_text``, timed), and the detector's probability map of a small
  copy of it (``GATE_SIDES``, through the engine's own detector session, timed); a variant
  reads in full only the images where its rule (``GATE_RULES``) holds on the small map: needle
  read rate and seconds per image (small pass plus full read where it passes) per kind.
* overhead: ``Collection.index`` of a folder of photos without text, without and with
  ``ocr=True`` (fresh collections, demo model, same ``--workers``), alternated ``--rounds``
  times; ratio with/without per round, median (target <= 1.30). The demo model embeds in
  almost no time, so OCR's cost is also set against the default model's: the image tower of
  ViT-B-32-SigLIP2-256 with random weights (its tokenizer cannot be downloaded here, so not
  through ``load_encoder``), torch forward on 256 x 256 batches, timed in the same run.

The machine's load (``os.getloadavg``) is recorded before and after each part.

    python benchmarks/ocr.py                                  # full corpus (96 needles)
    python benchmarks/ocr.py --per-language 36 --screenshots 6 --no-text 18 --overhead-n 16 \\
        --rounds 3 --json benchmarks/results/ocr-quick.json   # about 10 minutes on 2 cores
    python benchmarks/ocr.py --parts engine --per-language 48 --screenshots 0 --no-text 6 \\
        --seed 1 --configs project,det-low-thresh,det-max-1280,det-max-960 \\
        --json benchmarks/results/ocr-engine-seed1.json
    python benchmarks/ocr.py --parts quality --per-language 48 --screenshots 6 --no-text 12 \\
        --seed 1 --json benchmarks/results/ocr-quality-seed1.json

With the detector at 960 px (2026-12-05; the files above are from before, at RapidOCR's
default and 1280, except ocr-quality-seed1.json, rerun):

    python benchmarks/ocr.py --parts gate --per-language 36 --screenshots 6 --no-text 18 \\
        --json benchmarks/results/ocr-gate.json
    python benchmarks/ocr.py --parts gate --per-language 48 --screenshots 6 --no-text 12 \\
        --seed 1 --json benchmarks/results/ocr-gate-seed1.json
    python benchmarks/ocr.py --parts quality --per-language 36 --screenshots 6 --no-text 18 \\
        --seed 0 --json benchmarks/results/ocr-quality-seed0.json
    python benchmarks/ocr.py --parts quality --per-language 48 --screenshots 6 --no-text 12 \\
        --seed 1 --json benchmarks/results/ocr-quality-seed1.json
    python benchmarks/ocr.py --parts overhead --overhead-n 16 --rounds 3 \\
        --json benchmarks/results/ocr-overhead.json   # also -arena, -no-arena (see README)
    python benchmarks/ocr.py --parts engine --per-language 12 --screenshots 2 --no-text 18 \\
        --seed 2 --configs project,no-arena --json benchmarks/results/ocr-engine-arena.json
    python benchmarks/ocr.py --parts engine --per-language 6 --screenshots 2 --no-text 18 \\
        --seed 3 --threads 1 --configs project,no-arena \\
        --json benchmarks/results/ocr-engine-arena-1thread.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from ocr_corpus import Corpus, as_array, photos_without_text, write_corpus

# RapidOCR parameters laid over the project's own (retrieval.enrich.ocr._engine; until
# 2026-12-05 the rows left out the project's detector size, so "project" in older results
# files is RapidOCR's default, Det.limit_type=min, 736).
CONFIGS: dict[str, dict[str, Any]] = {
    "project": {},
    "no-arena": {"EngineConfig.onnxruntime.enable_cpu_mem_arena": False},
    "no-cls": {"Global.use_cls": False},
    "det-max-960": {"Det.limit_type": "max", "Det.limit_side_len": 960},
    "det-max-1280": {"Det.limit_type": "max", "Det.limit_side_len": 1280},
    "det-max-960,no-cls": {"Det.limit_type": "max", "Det.limit_side_len": 960,
                           "Global.use_cls": False},
    "det-low-thresh": {"Det.thresh": 0.2, "Det.box_thresh": 0.4},
    "det-max-640": {"Det.limit_type": "max", "Det.limit_side_len": 640},
    "det-max-640,no-cls": {"Det.limit_type": "max", "Det.limit_side_len": 640,
                           "Global.use_cls": False},
}
PARTS = ("quality", "engine", "gate", "overhead")
GATE_SIDES = (320, 480, 640)  # the small copy's longest side
GATE_RULES = {"any pixel >= 0.3": lambda pm: bool((pm >= 0.3).any()),
              "100 pixels >= 0.3": lambda pm: int((pm >= 0.3).sum()) >= 100,
              "max >= 0.6": lambda pm: float(pm.max()) >= 0.6}


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-language", type=int, default=48, help="needles per language (<= 48)")
    ap.add_argument("--screenshots", type=int, default=8, help="of them in screenshots")
    ap.add_argument("--no-text", type=int, default=24, help="images without text in the corpus")
    ap.add_argument("--overhead-n", type=int, default=32, help="photos in the overhead folder")
    ap.add_argument("--rounds", type=int, default=3, help="alternations of the overhead runs")
    ap.add_argument("--workers", type=int, default=None, help="decode processes (default auto)")
    ap.add_argument("--threads", type=int, default=None,
                    help="ONNX Runtime threads of the engine rows (default: one per core)")
    ap.add_argument("--configs", default="project,no-cls,det-max-1280,det-max-960,det-max-640",
                    help=f"engine rows, from {', '.join(CONFIGS)}")
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args()
    parts = args.parts.split(",")
    configs = _config_names(args.configs)
    results: dict[str, Any] = {"args": vars(args), "cpus": os.cpu_count(), "load": [load()]}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["RETRIEVAL_HOME"] = str(Path(tmp) / "home")
        if {"quality", "engine", "gate"} & set(parts):
            corpus = write_corpus(Path(tmp) / "corpus", per_language=args.per_language,
                                  screenshots=args.screenshots, no_text=args.no_text,
                                  seed=args.seed)
            print(f"corpus: {len(corpus.needles)} needles, {len(corpus.pictures)} images; "
                  f"load {load()}")
        if "quality" in parts:
            results["quality"] = quality(corpus, Path(tmp) / "quality-col", args.workers)
            results["load"].append(load())
        if "engine" in parts:
            results["engine"] = engine(corpus, configs, args.threads)
            results["load"].append(load())
        if "gate" in parts:
            results["gate"] = gate(corpus)
            results["load"].append(load())
        if "overhead" in parts:
            results["overhead"] = overhead(Path(tmp), args.overhead_n, args.rounds,
                                           args.workers, args.seed)
            results["load"].append(load())
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=1, ensure_ascii=False))


def _config_names(text: str) -> list[str]:
    """Names from a comma-separated list whose names may hold commas themselves."""
    out, rest = [], text
    while rest:
        name = max((n for n in CONFIGS if rest == n or rest.startswith(n + ",")), key=len,
                   default=None)
        if name is None:
            raise SystemExit(f"unknown engine config in {rest!r}; known: {', '.join(CONFIGS)}")
        out.append(name)
        rest = rest[len(name) + 1:]
    return out


# -- quality: keyword search on an indexed corpus ---------------------------------------------

def quality(corpus: Corpus, path: Path, workers: int | None) -> dict[str, Any]:
    from retrieval import Collection

    folder = Path(corpus.pictures[0].path).parent
    col = Collection(path, model="demo")
    t = time.perf_counter()
    summary = col.index([folder], ocr=True, workers=workers)
    seconds = time.perf_counter() - t
    ranks: dict[str, int | None] = {}
    misses = []
    for n in corpus.needles:
        hits = col.search(n.word, keywords=True, k=5)
        paths = [h.path or "" for h in hits]
        ranks[n.word] = paths.index(n.path) + 1 if n.path in paths else None
        if ranks[n.word] != 1:
            ocr_text = [h.metadata.get("ocr_text") for h in hits[:1]]
            misses.append({"word": n.word, "background": n.background, "rank": ranks[n.word],
                           "first": Path(paths[0]).name if paths else None,
                           "first_ocr_text": ocr_text})
    col.close()
    groups = _groups(corpus, ranks)
    print(f"\nquality: indexed {len(corpus.pictures)} images with ocr=True in {seconds:.1f}s "
          f"({summary.embedded} embedded, {summary.failed} failed); keyword search by needle")
    print(f"{'group':<22} {'needles':>7} {'top-1':>6} {'top-5':>6}")
    for name, row in groups.items():
        print(f"{name:<22} {row['n']:>7} {row['top1']:>6.3f} {row['top5']:>6.3f}")
    for m in misses:
        print(f"  not first: {m}")
    return {"index_seconds": seconds, "groups": groups, "misses": misses}


def _groups(corpus: Corpus, ranks: dict[str, int | None]) -> dict[str, dict[str, Any]]:
    by: dict[str, list[int | None]] = defaultdict(list)
    for n in corpus.needles:
        r = ranks[n.word]
        for key in ("all", f"lang {n.lang}", f"background {n.background}",
                    f"{n.lang} {n.background}"):
            by[key].append(r)
    order = sorted(by, key=lambda k: (k != "all", not k.startswith("lang"),
                                      not k.startswith("background"), k))
    return {k: {"n": len(by[k]), "top1": sum(r == 1 for r in by[k]) / len(by[k]),
                "top5": sum(r is not None for r in by[k]) / len(by[k])} for k in order}


# -- engine: reading alone, the project's configuration and variants --------------------------

def _engines(names: list[str], threads: int | None) -> dict[str, Any]:
    from rapidocr import RapidOCR

    from retrieval.enrich.ocr import DETECT_SIDE, MAX_SIDE, MIN_SCORE

    n = threads or os.cpu_count() or 1
    base = {"Global.log_level": "error", "Global.text_score": MIN_SCORE,
            "Global.max_side_len": MAX_SIDE, "Det.limit_type": "max",
            "Det.limit_side_len": DETECT_SIDE,
            "EngineConfig.onnxruntime.enable_cpu_mem_arena": True,
            "EngineConfig.onnxruntime.intra_op_num_threads": n,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1}
    return {name: RapidOCR(params={**base, **CONFIGS[name]}) for name in names}


def _normal(text: str) -> str:
    return re.sub(r"\s+", "", text.lower())


def engine(corpus: Corpus, names: list[str], threads: int | None) -> dict[str, Any]:
    """Each image read by every configuration in turn (after one warm-up read each)."""
    engines = _engines(names, threads)
    first = as_array(corpus.pictures[0].path)[..., ::-1].copy()
    for e in engines.values():
        e(first)
    texts: dict[str, dict[str, str]] = {n: {} for n in names}
    stages: dict[str, dict[str, list[list[float]]]] = {n: defaultdict(list) for n in names}
    for p in corpus.pictures:
        bgr = as_array(p.path)[..., ::-1].copy()
        for name, e in engines.items():
            t = time.perf_counter()
            r = e(bgr)
            total = time.perf_counter() - t
            # nothing detected: the detector's time is all there is (elapse_list is empty)
            split = ([float(x or 0.0) for x in r.elapse_list][:3] if r.elapse_list
                     else [total, 0.0, 0.0])
            stages[name][p.kind].append([total, *split])
            texts[name][p.path] = " ".join(r.txts or ())
    rows = {name: _engine_row(corpus, texts[name], stages[name]) for name in names}
    _print_engine(rows, threads)
    return rows


def _engine_row(corpus: Corpus, texts: dict[str, str], stages: dict[str, list[list[float]]]
                ) -> dict[str, Any]:
    found: dict[str, list[bool]] = defaultdict(list)
    missed = []
    for n in corpus.needles:
        ok = _normal(n.word) in _normal(texts[n.path])
        for key in ("all", f"lang {n.lang}", f"background {n.background}"):
            found[key].append(ok)
        if not ok:
            missed.append({"word": n.word, "background": n.background,
                           "read": texts[n.path][:120]})
    row: dict[str, Any] = {"found": {k: sum(v) / len(v) for k, v in found.items()},
                           "missed": missed,
                           "no_text_with_text": sum(bool(texts[p.path]) for p in corpus.pictures
                                                    if p.kind == "no-text")}
    for kind, times in stages.items():
        col = list(zip(*times, strict=True))
        total = sum(col[0])
        row[kind] = {"images": len(times), "images_per_s": len(times) / total,
                     "seconds_per_image": total / len(times),
                     "det_share": sum(col[1]) / total, "cls_share": sum(col[2]) / total,
                     "rec_share": sum(col[3]) / total}
    return row


def _print_engine(rows: dict[str, dict[str, Any]], threads: int | None) -> None:
    base = rows[next(iter(rows))]
    print(f"\nengine (ONNX Runtime threads {threads or os.cpu_count()}): needle in its image's "
          "text, images/s (x the first row), det/cls/rec share of the time")
    print(f"{'config':<20} {'en':>5} {'zh':>5} {'all':>5} {'notxt':>5} | "
          f"{'no-text img/s':>13} {'x':>5} {'d/c/r':>8} | {'screens img/s':>13} {'x':>5} "
          f"{'d/c/r':>8} | {'text img/s':>10} {'x':>5}")
    for name, r in rows.items():
        f = r["found"]
        line = (f"{name:<20} {f.get('lang en', 0):>5.2f} {f.get('lang zh', 0):>5.2f} "
                f"{f['all']:>5.2f} {r['no_text_with_text']:>5} |")
        for kind, width in (("no-text", 13), ("screenshot", 13), ("text", 10)):
            if kind not in r:
                continue
            k, b = r[kind], base[kind]
            rate = k["images_per_s"]
            line += f" {rate:>{width}.2f} {rate / b['images_per_s']:>5.2f}"
            if kind != "text":
                line += (f" {k['det_share']:.1f}/{k['cls_share']:.1f}/{k['rec_share']:.1f}"
                         .rjust(9) + " |")
        print(line)
        for m in r["missed"]:
            print(f"    missed {m}")


# -- gate: a detector pass on a small copy, the full read only where it sees text ------------

def _probability_map(engine: Any, rgb: Any, side: int) -> Any:
    """The detector's text probability map of ``rgb`` scaled to ``side`` on its longest side
    (multiples of 32, as the detector takes), through the engine's own detector session."""
    import numpy as np
    from PIL import Image

    h, w = rgb.shape[:2]
    s = min(1.0, side / max(h, w))
    size = (max(32, round(w * s / 32) * 32), max(32, round(h * s / 32) * 32))
    small = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR), np.float32)
    x = ((small[..., ::-1] / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)[None]
    return engine._load_det_model().session(np.ascontiguousarray(x, np.float32))[0, 0]


def gate(corpus: Corpus) -> dict[str, Any]:
    """Each image read as the project reads it (``recognise_text``, timed) and its probability
    map at each of GATE_SIDES (timed); a gate variant runs the read only where its rule holds
    on the small map: its cost is the small pass plus the read where it passes."""
    from PIL import Image

    from retrieval.enrich import ocr

    engine = ocr._engine(None)
    pics = []
    for i, p in enumerate(corpus.pictures):
        with Image.open(p.path) as img:
            pixels = ocr.file_pixels(img)
        for _ in range(2 if i == 0 else 1):  # the first image twice: warm-up
            t = time.perf_counter()
            text = " ".join(line.text for line in ocr.recognise_text(pixels))
            read = time.perf_counter() - t
            small = {}
            for side in GATE_SIDES:
                t = time.perf_counter()
                pm = _probability_map(engine, pixels, side)
                small[side] = (time.perf_counter() - t,
                               {name: rule(pm) for name, rule in GATE_RULES.items()})
        pics.append((p, text, read, small))
    variants: dict[str, tuple[int, str] | None] = {f"{ocr.DETECT_SIDE} alone": None}
    variants.update({f"{side}: {name}": (side, name) for side in GATE_SIDES
                     for name in GATE_RULES})
    rows = {v: _gate_row(corpus, pics, f) for v, f in variants.items()}
    print("\ngate: needle read (en, zh, small, phone, all); seconds per image (share of images "
          "read in full) on no-text, screenshots, text")
    for v, r in rows.items():
        f = r["found"]
        print(f"{v:<26} " + " ".join(f"{f.get(k, 0):.2f}" for k in
                                     ("lang en", "lang zh", "background small",
                                      "background phone", "all")) + " | " +
              " | ".join(f"{r[k]['seconds_per_image']:.3f} ({r[k]['read_share']:.2f})"
                         for k in ("no-text", "screenshot", "text") if k in r))
    return rows


def _gate_row(corpus: Corpus, pics: list[Any], variant: tuple[int, str] | None
              ) -> dict[str, Any]:
    texts, row = {}, {}
    by: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    for p, text, read, small in pics:
        cost, passed = (0.0, True) if variant is None else (small[variant[0]][0],
                                                            small[variant[0]][1][variant[1]])
        texts[p.path] = text if passed else ""
        by[p.kind].append((cost + (read if passed else 0.0), passed))
    found: dict[str, list[bool]] = defaultdict(list)
    for n in corpus.needles:
        for key in ("all", f"lang {n.lang}", f"background {n.background}"):
            found[key].append(_normal(n.word) in _normal(texts[n.path]))
    row["found"] = {k: sum(v) / len(v) for k, v in found.items()}
    for kind, xs in by.items():
        row[kind] = {"images": len(xs), "seconds_per_image": sum(c for c, _ in xs) / len(xs),
                     "read_share": sum(p for _, p in xs) / len(xs)}
    return row


# -- overhead: index with and without ocr on photos without text ------------------------------

def overhead(tmp: Path, n: int, rounds: int, workers: int | None, seed: int) -> dict[str, Any]:
    from retrieval import Collection

    folder = tmp / "photos"
    photos_without_text(folder, n, seed=seed + 1)
    times: dict[bool, list[float]] = {False: [], True: []}
    ratios, models, over_model = [], [default_model_rate()], []
    Collection(tmp / "warm", model="demo").index([folder], ocr=True, workers=workers)
    for r in range(rounds):
        for ocr in (False, True) if r % 2 == 0 else (True, False):
            col = Collection(tmp / f"overhead-{r}-{int(ocr)}", model="demo")
            t = time.perf_counter()
            summary = col.index([folder], ocr=ocr, workers=workers)
            times[ocr].append(time.perf_counter() - t)
            col.close()
            assert summary.embedded == n and summary.failed == 0, summary
        ratios.append(times[True][-1] / times[False][-1])
        # OCR's extra time per image against the default model's embedding time per image,
        # the model timed just before and after the round
        models.append(default_model_rate())
        extra = (times[True][-1] - times[False][-1]) / n
        over_model.append(extra * (models[-2] + models[-1]) / 2)
        print(f"round {r + 1}: index {n} photos without text: {times[False][-1]:.2f}s, with ocr "
              f"{times[True][-1]:.2f}s, ratio {ratios[-1]:.2f}; OCR adds {extra * 1000:.0f} ms "
              f"per image = {over_model[-1]:.2f}x the default model's embedding "
              f"({models[-1]:.1f} images/s); load {load()}")
    out = {"n": n, "workers": workers, "seconds_without": times[False],
           "seconds_with": times[True], "ratios": ratios, "ratio": statistics.median(ratios),
           "ocr_seconds_per_image": (statistics.median(times[True])
                                     - statistics.median(times[False])) / n,
           "default_model_images_per_s": models,
           "ocr_over_default_embedding": statistics.median(over_model),
           "round_ocr_over_default_embedding": over_model}
    print(f"median ratio with/without ocr: {out['ratio']:.2f} (target <= 1.30); OCR adds "
          f"{out['ocr_over_default_embedding']:.2f}x the default model's embedding time "
          "(median of rounds; its image tower on torch, random weights)")
    return out


def default_model_rate(batch: int = 16, batches: int = 3) -> float:
    """Images/s of ViT-B-32-SigLIP2-256's image tower (random weights; torch, every core)."""
    import open_clip
    import torch

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32-SigLIP2-256").eval()
    x = torch.randn(batch, 3, 256, 256)
    with torch.no_grad():
        model.encode_image(x)  # warm-up at the measured shape
        t = time.perf_counter()
        for _ in range(batches):
            model.encode_image(x)
    return batch * batches / (time.perf_counter() - t)


if __name__ == "__main__":
    main()
