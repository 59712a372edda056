"""The model guide, measured here: each candidate of ``retrieval/encoders/guide.py`` exported to
ONNX with the project's export path (parity-checked against torch) and timed on this machine.

Weights cannot be downloaded here, so each model is its family's real architecture (open_clip's
config) with random, seeded weights, written as a ``local-dir:`` folder with the preprocessing
of its pretrained tag. What cannot be had offline is stood in for, and said so: SigLIP 2's
Gemma tokenizer (gated on the Hub) by a Gemma-style tokenizer trained here; the Hugging Face
text towers' configs (``xlm-roberta-base``, ``facebook/nllb-200-distilled-600M``) by configs
written from their published sizes (the towers' parameter counts match open_clip's
docs/model_profile.csv: 278.27M and 414.3M) with stand-in tokenizers. A stand-in tokenizer
changes only the cost of tokenizing (microseconds), never that of the towers.

Each model is measured in a child process of its own (a big model's export needs gigabytes):

* export: seconds for ``export_model`` (both towers, the parity check, the torch-vs-ONNX speed
  test an export records) and for adding the int8 variant; the files' sizes;
* image throughput, fp32 and int8 (ONNX Runtime, a batch of ``--images`` decoded photos, every
  core): as a ratio to ViT-B-32's, measured alternately with it in the same process, round by
  round (median), so that load from other work on the machine falls on both alike;
* warm text encode: p50 ms of one query at a time (fp32 session, weights pre-packed);
* cold CLI query: ``retrieval search`` in a fresh process on a collection of 8 images of the
  model, a query no run searched before (median of ``--runs`` after one warm-up).

    nice -n 10 python benchmarks/models.py --write-guide
    python benchmarks/models.py --models MobileCLIP-S1/datacompdr --work /tmp/guide
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import pprint
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))  # the stand-in tokenizers and the local-dir layout

BASELINE = "ViT-B-32/laion2b_s34b_b79k"
GUIDE = ROOT / "retrieval" / "encoders" / "guide.py"
BEGIN = "# --- measured by benchmarks/models.py, which rewrites this block; do not edit by hand ---"
END = "# --- end of measured ---"
NOUNS = ("dog", "red bicycle", "beach at sunset", "cat on a sofa", "mountain lake")

# The Hugging Face text towers' configs, from the published model sizes.
XLM_ROBERTA_BASE = {
    "model_type": "xlm-roberta", "architectures": ["XLMRobertaForMaskedLM"],
    "vocab_size": 250002, "hidden_size": 768, "num_hidden_layers": 12,
    "num_attention_heads": 12, "intermediate_size": 3072, "hidden_act": "gelu",
    "max_position_embeddings": 514, "type_vocab_size": 1, "layer_norm_eps": 1e-05,
    "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}
NLLB_200_DISTILLED_600M = {
    "model_type": "m2m_100", "architectures": ["M2M100ForConditionalGeneration"],
    "vocab_size": 256206, "d_model": 1024, "encoder_layers": 12, "decoder_layers": 12,
    "encoder_attention_heads": 16, "decoder_attention_heads": 16, "encoder_ffn_dim": 4096,
    "decoder_ffn_dim": 4096, "max_position_embeddings": 1024, "scale_embedding": True,
    "activation_function": "relu", "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
    "decoder_start_token_id": 2}


# --- the model as a local-dir folder ------------------------------------------------------------

def write_model(key: str, folder: Path) -> Path:
    """The real architecture of ``key`` (name/pretrained) with random seeded weights, the
    preprocessing of its pretrained tag, and stand-ins for what cannot be downloaded."""
    import open_clip
    import torch
    from models import save_weights

    name, tag = key.split("/")
    folder.mkdir(parents=True, exist_ok=True)
    cfg = json.loads(json.dumps(open_clip.get_model_config(name)))
    pretrained = open_clip.get_pretrained_cfg(name, tag)
    preprocess = {k: pretrained[k] for k in ("mean", "std", "interpolation", "resize_mode")
                  if k in pretrained}
    text = cfg["text_cfg"]
    custom = bool(cfg.pop("custom_text", False) or text.get("hf_model_name"))
    if text.get("hf_model_name"):
        _stand_in_hf_tower(folder, text["hf_model_name"])
        text.update(hf_model_name=str(folder), hf_tokenizer_name=str(folder))
    elif text.get("hf_tokenizer_name"):  # SigLIP 2: Gemma's tokenizer
        from families import write_gemma_tokenizer

        write_gemma_tokenizer(folder)
        text["hf_tokenizer_name"] = str(folder)
    torch.manual_seed(0)
    build = dict(cfg, text_cfg=dict(text, hf_model_pretrained=False)
                 ) if text.get("hf_model_name") else cfg
    model = (open_clip.CustomTextCLIP if custom else open_clip.CLIP)(**build)
    save_weights(folder, model)
    (folder / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": dict(cfg, custom_text=custom), "preprocess_cfg": preprocess}))
    return folder


def _stand_in_hf_tower(folder: Path, hub_name: str) -> None:
    from models import write_tiny_hf_text, write_tiny_nllb_model

    if "nllb" in hub_name:
        with tempfile.TemporaryDirectory() as tmp:
            tiny = write_tiny_nllb_model(Path(tmp) / "nllb")
            for f in ("tokenizer.json", "tokenizer_config.json"):
                shutil.copyfile(tiny / f, folder / f)
        config = NLLB_200_DISTILLED_600M
    else:
        write_tiny_hf_text(folder)
        config = XLM_ROBERTA_BASE
    (folder / "config.json").write_text(json.dumps(config))


# --- one model, in its own process ---------------------------------------------------------------

def write_photos(folder: Path, n: int) -> list[Path]:
    """``n`` 640x480 JPEG photos of drawn scenes with noise (decoded as indexing decodes)."""
    import random

    import numpy as np
    from PIL import Image

    from retrieval.training.synthetic import random_scene, render

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    out = []
    for i in range(n):
        path = folder / f"photo{i:02d}.jpg"
        if not path.exists():
            img = np.asarray(render(random_scene(rng), size=480, seed=i).resize((640, 480)))
            noise = np.random.default_rng(i).normal(0, 12, img.shape)
            Image.fromarray(np.clip(img + noise, 0, 255).astype(np.uint8)).save(path, quality=90)
        out.append(path)
    return out


def _pixels(photos: list[Path], spec: Any) -> Any:
    import numpy as np

    from retrieval.media import load_image

    return np.stack([load_image(p, spec)[0] for p in photos])


def _sizes(export: Any, precision: str) -> float:
    names = {n for tower in ("image", "text") for n in export.tower_names(tower, precision)}
    return round(sum((export.folder / n).stat().st_size for n in names) / 2**20, 1)


def _throughput(encoders: dict[str, Any], pixels: dict[str, Any], rounds: int
                ) -> dict[str, float]:
    """Images/s of each encoder (median over rounds) and, where a baseline runs beside it, the
    median of the per-round ratios: the encoders take turns within each round."""
    per_s: dict[str, list[float]] = {k: [] for k in encoders}
    for key, enc in encoders.items():
        enc.embed_images(pixels[key][:2])  # sessions made, weights packed
    for _ in range(rounds):
        for key, enc in encoders.items():
            start = time.perf_counter()
            enc.embed_images(pixels[key])
            per_s[key].append(len(pixels[key]) / (time.perf_counter() - start))
    out = {k: round(statistics.median(v), 2) for k, v in per_s.items()}
    for precision in ("fp32", "int8"):
        if f"base-{precision}" in per_s:
            out[f"ratio-{precision}"] = round(statistics.median(
                m / b for m, b in zip(per_s[precision], per_s[f"base-{precision}"],
                                      strict=True)), 3)
    return out


def _text_p50_ms(encoder: Any, n: int = 30) -> float:
    for i in range(3):
        encoder.embed_texts([f"warm-up query {i}"])
    times = []
    for i in range(n):
        start = time.perf_counter()
        encoder.embed_texts([f"a photo of a {NOUNS[i % len(NOUNS)]} number {i}"])
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 2)


def _cold_queries(collection: Path, runs: int, env: dict[str, str]) -> float:
    exe = str(Path(sys.executable).with_name("retrieval"))
    walls = []
    for i in range(runs + 1):
        start = time.perf_counter()
        subprocess.run([exe, "--collection", str(collection), "search",
                        f"a photo of a {NOUNS[i % len(NOUNS)]} #{i} {time.time_ns()}", "-k", "5"],
                       env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        walls.append(time.perf_counter() - start)
    return round(statistics.median(walls[1:]), 3)  # the first is a warm-up


def _speed(export: Any, store: Any, work: Path, args: argparse.Namespace, text: bool
           ) -> dict[str, Any]:
    """Image throughput, fp32 and int8, alone and as ratios to the baseline's measured beside
    it; with ``text``, the warm text encode too."""
    from retrieval.encoders.runtime import OnnxEncoder

    photos = write_photos(work / "photos", args.images)
    encoders = {"fp32": OnnxEncoder(export, "fp32"), "int8": OnnxEncoder(export, "int8")}
    pixels = {p: _pixels(photos, export.image_spec) for p in encoders}
    if args.baseline_identity:
        base = store.by_identity(args.baseline_identity, "int8")
        assert base is not None, "the baseline's export is missing"
        for p in ("fp32", "int8"):
            encoders[f"base-{p}"] = OnnxEncoder(base, p)
            pixels[f"base-{p}"] = _pixels(photos, base.image_spec)
    speed = _throughput(encoders, pixels, args.rounds)
    out: dict[str, Any] = {
        "image_fp32_per_s": speed["fp32"], "image_int8_per_s": speed["int8"],
        "image_fp32_ratio": speed.get("ratio-fp32", 1.0),
        "image_int8_ratio": speed.get("ratio-int8", 1.0),
        "speed_rounds": args.rounds, "speed_images": args.images}
    if args.baseline_identity:
        out.update(baseline_fp32_per_s=speed["base-fp32"], baseline_int8_per_s=speed["base-int8"])
    if text:
        out["text_p50_ms"] = _text_p50_ms(encoders["fp32"])
    return out


def speed_again(key: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """An earlier run's result for ``key`` with its image throughput measured again (more
    rounds, say): the export, its sizes and times, the text and cold-query figures kept."""
    from retrieval.encoders.export_store import ExportStore

    prior = json.loads(_result_path(work, key).read_text())
    if prior.get("export") != "ok":
        return dict(prior)
    store = ExportStore(work / "exports")
    export = store.by_identity(prior["identity"], "int8")
    assert export is not None, f"the export of {key} is missing"
    return {**prior, **_speed(export, store, work, args, text=False)}


def _result_path(work: Path, key: str) -> Path:
    return work / "results" / (key.replace("/", "-") + ".json")


def measure(key: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Everything the guide shows about one model."""
    from retrieval import Collection, ModelSpec, load_encoder
    from retrieval.encoders.export import export_model, quantize_export
    from retrieval.encoders.export_store import ExportStore

    if args.speed_again:
        return speed_again(key, work, args)
    slug = key.replace("/", "-")
    folder = write_model(key, work / "models" / slug)
    spec = ModelSpec.parse(f"local-dir:{folder}")
    store = ExportStore(work / "exports")
    encoder = load_encoder(spec, "cpu")
    start = time.perf_counter()
    export = export_model(encoder, store=store)
    result: dict[str, Any] = {"export_s": round(time.perf_counter() - start, 1),
                              "identity": export.identity}
    if not export.ok:
        return {**result, "export": "failed", "reason": export.reason}
    del encoder
    start = time.perf_counter()
    export = quantize_export(store, export)
    m = export.manifest
    result.update(export="ok", int8_s=round(time.perf_counter() - start, 1),
                  fp32_mb=_sizes(export, "fp32"), int8_mb=_sizes(export, "int8"),
                  int8_text=bool(m["variants"]["int8"].get("text")), dim=export.dim,
                  image_size=list(export.image_spec.size), trim=m["text"]["trim"],
                  context_length=m["text"]["context_length"],
                  tokenizer=m["text"]["tokenizer"]["kind"],
                  parity={t: {k: m["parity"][t][k] for k in ("min_cos", "max_abs")}
                          for t in ("image", "text")},
                  torch_vs_onnx=m.get("speed"))
    result.update(_speed(export, store, work, args, text=True))
    col_path = work / "collections" / slug
    shutil.rmtree(col_path, ignore_errors=True)
    col = Collection(col_path, model=str(spec.name))
    col.index([work / "photos"], workers=0)
    col.close()
    result["cold_query_s"] = _cold_queries(col_path, args.runs, dict(os.environ))
    return result


# --- the run --------------------------------------------------------------------------------------

def run_child(key: str, work: Path, args: argparse.Namespace, baseline: str | None
              ) -> dict[str, Any]:
    out = _result_path(work, key)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, "--child", key, "--work", str(work), "--images",
           str(args.images), "--rounds", str(args.rounds), "--runs", str(args.runs),
           "--baseline-identity", baseline or ""] + (["--speed-again"] if args.speed_again
                                                     else [])
    if args.reuse and out.exists() and not args.speed_again:
        return dict(json.loads(out.read_text()), reused=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " ".join(proc.stderr.strip().splitlines()[-3:])[-400:]
        if args.speed_again and out.exists():  # the earlier figures stand
            return dict(json.loads(out.read_text()), speed_again_failed=tail)
        return {"export": "error", "reason": f"the measurement failed: {tail}"}
    result = json.loads(out.read_text())
    if not args.speed_again:
        result["wall_s"] = round(time.perf_counter() - start, 1)
    return result


def _indented(text: str, by: str = "    ") -> str:
    return "\n".join(by + line for line in text.splitlines())


def _rows(slim: dict[str, dict[str, Any]], width: int = 96) -> str:
    """One model per entry, its fields packed into lines of at most ``width`` characters
    (broken between fields; a field too long for a line gets lines of its own)."""
    out = []
    for key, fields in slim.items():
        lines, line = [], ""
        for name, value in fields.items():
            item = f"{name!r}: {value!r},"
            if len(item) > width - 8:
                long = pprint.pformat(value, width=width - 12)
                item = f"{name!r}: (\n{_indented(long, ' ' * 12)}),"
            if line and len(line) + 1 + len(item.split(chr(10))[0]) > width - 8:
                lines.append(line)
                line = ""
            line = f"{line} {item}" if line else item
        lines.append(line.rstrip(","))
        out.append(f"    {key!r}: {{\n" + _indented("\n".join(lines), " " * 8) + "},\n")
    return "".join(out)


def write_guide(measured: dict[str, dict[str, Any]], meta: dict[str, str]) -> None:
    """Rewrite the measured block of retrieval/encoders/guide.py."""
    keep = ("export", "reason", "same_network_as", "export_s", "int8_s", "fp32_mb", "int8_mb",
            "int8_text", "image_fp32_per_s", "image_int8_per_s", "image_fp32_ratio",
            "image_int8_ratio", "speed_rounds", "text_p50_ms", "cold_query_s", "trim",
            "context_length", "tokenizer")
    slim = {k: {f: v[f] for f in keep if f in v} for k, v in measured.items()}

    when = _indented(pprint.pformat(meta, width=92))
    block = (f"{BEGIN}\nMEASURED_ON: dict[str, str] = (\n{when}"
             f"\n)\nMEASURED: dict[str, dict[str, Any]] = {{\n{_rows(slim)}}}\n{END}")
    text = GUIDE.read_text(encoding="utf-8")
    start, end = text.index(BEGIN), text.index(END) + len(END)
    GUIDE.write_text(text[:start] + block + text[end:], encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="", help="name/pretrained,... (default: all)")
    parser.add_argument("--work", type=Path, default=None, help="keep the work folder here")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "models.json")
    parser.add_argument("--write-guide", action="store_true",
                        help="rewrite the measured block of retrieval/encoders/guide.py")
    parser.add_argument("--reuse", action="store_true",
                        help="take a model's result from an earlier run in --work if there")
    parser.add_argument("--not-measured", action="append", default=[], metavar="KEY=WHY",
                        help="a model left out of this run, and why (the guide says so)")
    parser.add_argument("--speed-again", action="store_true",
                        help="measure the image throughput of the models in --work again "
                             "(with these --rounds and --images), keeping the rest")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--baseline-identity", default="", help=argparse.SUPPRESS)
    parser.add_argument("--write-guide-from", type=Path, default=None, metavar="RESULTS",
                        help="rewrite the guide's measured block from an earlier run's --out "
                             "file, measuring nothing")
    args = parser.parse_args()
    if args.write_guide_from:
        done = json.loads(args.write_guide_from.read_text())
        _same_networks(done["models"])
        write_guide(done["models"], done["measured_on"])
        return
    work = (args.work or Path(tempfile.mkdtemp(prefix="guide-"))).resolve()
    os.environ.update(HF_HUB_OFFLINE="1", RETRIEVAL_HOME=str(work / "home"),
                      RETRIEVAL_EXPORTS=str(work / "exports"))
    if args.child:
        result = measure(args.child, work, args)
        path = _result_path(work, args.child)
        path.write_text(json.dumps(result, indent=1))
        return
    run(args, work)


def _same_networks(measured: dict[str, dict[str, Any]]) -> None:
    """Two names for one network (the same config, preprocessing and, here, random weights:
    MobileCLIP-S2 and MobileCLIP2-S2) have one identity, so the second found the first's
    export made: it gets the first's export times and says whose they are."""
    first: dict[str, str] = {}
    for key, m in measured.items():
        identity = m.get("identity")
        if identity in first and m.get("export") == "ok":
            same = measured[first[identity]]
            m.update(export_s=same.get("export_s"), int8_s=same.get("int8_s"),
                     same_network_as=first[identity])
        elif identity:
            first[identity] = key


def run(args: argparse.Namespace, work: Path) -> None:
    from retrieval.encoders import guide

    keys = [k for k in (args.models.split(",") if args.models else
                        [c.key for c in guide.CANDIDATES]) if k]
    measured: dict[str, dict[str, Any]] = {}
    base = run_child(BASELINE, work, args, None)
    measured[BASELINE] = base
    print(f"{BASELINE}: {json.dumps(base)}", flush=True)
    skipped = dict(item.split("=", 1) for item in args.not_measured)
    for key in keys:
        if key == BASELINE:
            continue
        if key in skipped:
            measured[key] = {"export": "not measured",
                             "reason": f"not measured in this run: {skipped[key]}"}
        else:
            measured[key] = run_child(key, work, args, base.get("identity"))
        print(f"{key}: {json.dumps(measured[key])}", flush=True)
    _same_networks(measured)
    command = ("nice -n 10 python benchmarks/models.py"
               + (f" --models {args.models}" if set(keys) < {c.key for c in guide.CANDIDATES}
                  else "")
               + (" --speed-again" if args.speed_again else "")
               + f" --images {args.images} --rounds {args.rounds} --runs {args.runs}")
    if args.speed_again and args.out.exists():
        first = json.loads(args.out.read_text())["measured_on"]["command"]
        command = f"{first.split('; then ')[0]}; then {command}"
    meta = {"date": dt.date.today().isoformat(), "command": command,
            "machine": f"{os.cpu_count()} cores, {platform.machine()}, shared with other work"}
    if os.environ.get("GUIDE_CODE"):  # the commit measured, when run from a copy of it
        meta["code"] = os.environ["GUIDE_CODE"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"measured_on": meta, "models": measured}, indent=1))
    guide.MEASURED_ON.clear()
    guide.MEASURED_ON.update(meta)
    guide.MEASURED.clear()
    guide.MEASURED.update(measured)
    print("\n".join(guide.table_lines()))
    _, passed = guide.default_choice()
    print("passed over:\n  " + "\n  ".join(passed))
    if args.write_guide:
        write_guide(measured, meta)
    print(f"results: {args.out}; work folder: {work}")


if __name__ == "__main__":
    main()
