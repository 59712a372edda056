"""The model guide: for each candidate model, what it costs on this project's reference machine
(measured by ``benchmarks/models.py``), its published zero-shot accuracy with the source, and
its weights' licence; and the rule that picks the default model for new collections from them.

Costs are measured on each family's real architecture with random weights (the weights cannot
be downloaded where the benchmark runs; the cost of a network does not depend on its weights'
values), exported with this project's export path and parity-checked against torch.
Throughputs are ratios to ViT-B-32's measured in the same run, alternating with it in the same
process, so that load from other work on the machine falls on both.

Published figures: ImageNet-1k zero-shot top-1, and text-to-image retrieval recall@1 on
MSCOCO (5k test) and Flickr30k, in percent, each from the source named in ``SOURCES``. The
suites differ between sources (open_clip's and Apple's tables come from the same DataComp
evaluation code; Google's and Meta's from their own), so figures from different sources
compare only roughly.

Licences were read from the sources named; ``any_use`` is True where the licence allows any
use (commercial included), False where it does not, None where it could not be verified.

Nothing here imports torch, open_clip or onnxruntime.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .spec import ModelSpec

log = logging.getLogger("retrieval")

BASELINE = "ViT-B-32/laion2b_s34b_b79k"
MAX_IMAGE_COST = 1.5  # the default's image cost, at most this many times ViT-B-32's

SOURCES = {
    "openclip": "open_clip docs/openclip_results.csv (ImageNet 1k) and "
                "docs/openclip_retrieval_results.csv (MSCOCO, Flickr image retr. R@1), "
                "mlfoundations/open_clip at 89fb801",
    "mobileclip": "apple/ml-mobileclip results/<model>.jsonl (DataComp evaluation: imagenet1k "
                  "acc1, MSCOCO and Flickr image_retrieval_recall@1) at 4144bb1",
    "siglip2": "google-research/big_vision big_vision/configs/proj/image_text/"
               "README_siglip2.md (INet 0-shot, COCO T→I) at 0127fb6; open_clip's tables "
               "have no SigLIP 2 rows",
    "pe": "facebookresearch/perception_models apps/pe/README.md (IN-1k, COCO-T2I) at "
          "3e352cc; open_clip's tables have no PE-Core rows",
}

_MIT_CARD = "Hugging Face model card of {} (license: mit)"
_AMLR = ("Apple ML Research Model terms (research only, no commercial use): apple/ml-mobileclip "
         "README and LICENSE_MODELS at 4144bb1; card licence apple-amlr")
_SIGLIP2 = ("big_vision README_siglip2.md: checkpoints (\"all other materials\") CC-BY-4.0; "
            "google/siglip2-* cards: apache-2.0")
_PE = "perception_models apps/pe/README.md: all checkpoints Apache 2.0"


@dataclass(frozen=True)
class Candidate:
    """A model of the guide and what is published about it."""

    name: str
    pretrained: str
    family: str
    languages: str  # "English" or "many"
    imagenet: float | None
    coco_t2i: float | None
    flickr_t2i: float | None
    figures: str  # a key of SOURCES
    licence: str
    licence_source: str
    any_use: bool | None

    @property
    def key(self) -> str:
        return f"{self.name}/{self.pretrained}"


CANDIDATES: tuple[Candidate, ...] = (
    Candidate("ViT-B-32", "laion2b_s34b_b79k", "CLIP", "English", 66.56, 39.34, 66.78,
              "openclip", "MIT", _MIT_CARD.format("laion/CLIP-ViT-B-32-laion2B-s34B-b79K")
              + ", as listed from the Hub", True),
    Candidate("ViT-B-32-256", "datacomp_s34b_b86k", "CLIP", "English", 72.81, 39.93, 64.92,
              "openclip", "unverified", "the card of laion/CLIP-ViT-B-32-256x256-DataComp-"
              "s34B-b86K as read here shows no licence line", None),
    Candidate("ViT-B-16", "dfn2b", "CLIP (DFN)", "English", 76.24, 43.39, 69.12, "openclip",
              "apple-sample-code-license (unverified)",
              "read on the sibling card apple/DFN2B-CLIP-ViT-L-14-39B (license_name: "
              "apple-sample-code-license); apple/DFN2B-CLIP-ViT-B-16's own card not read",
              None),
    Candidate("ViT-B-32-SigLIP2-256", "webli", "SigLIP 2", "many", 74.0, 47.2, None,
              "siglip2", "Apache-2.0 / CC-BY-4.0", _SIGLIP2, True),
    Candidate("ViT-B-16-SigLIP2", "webli", "SigLIP 2", "many", 78.2, 52.1, None, "siglip2",
              "Apache-2.0 / CC-BY-4.0", _SIGLIP2, True),
    Candidate("MobileCLIP-S1", "datacompdr", "MobileCLIP", "English", 72.62, 44.02, 70.96,
              "mobileclip", "apple-amlr", _AMLR, False),
    Candidate("MobileCLIP-S2", "datacompdr", "MobileCLIP", "English", 74.44, 45.37, 73.38,
              "mobileclip", "apple-amlr", _AMLR, False),
    Candidate("MobileCLIP2-S0", "dfndr2b", "MobileCLIP2", "English", 71.53, 43.68, 69.22,
              "mobileclip", "apple-amlr", _AMLR, False),
    Candidate("MobileCLIP2-S2", "dfndr2b", "MobileCLIP2", "English", 77.24, 48.82, 74.82,
              "mobileclip", "apple-amlr", _AMLR, False),
    Candidate("MobileCLIP2-B", "dfndr2b", "MobileCLIP2", "English", 79.41, 49.90, 76.50,
              "mobileclip", "apple-amlr", _AMLR, False),
    Candidate("PE-Core-S-16-384", "meta", "PE-Core", "English", 72.7, 42.6, None, "pe",
              "Apache-2.0", _PE, True),
    Candidate("PE-Core-B-16", "meta", "PE-Core", "English", 78.4, 50.9, None, "pe",
              "Apache-2.0", _PE, True),
    Candidate("xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k", "CLIP + XLM-RoBERTa", "many",
              62.36, 37.78, 64.48, "openclip", "MIT",
              _MIT_CARD.format("laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k"),
              True),
    Candidate("nllb-clip-base-siglip", "v1", "NLLB-CLIP", "many", 39.09, 43.15, 69.22,
              "openclip", "unverified", "the card of visheratin/nllb-clip-base-siglip could "
              "not be read here", None),
)

# --- measured by benchmarks/models.py, which rewrites this block; do not edit by hand ---
MEASURED_ON: dict[str, str] = (
    {'code': '903c890',
     'command': 'nice -n 10 python benchmarks/models.py --images 16 --rounds 3 --runs 5; then '
                'nice -n 10 python benchmarks/models.py --speed-again --images 8 --rounds 7 '
                '--runs 5',
     'date': '2026-12-04',
     'machine': '2 cores, x86_64, shared with other work'}
)
MEASURED: dict[str, dict[str, Any]] = {
    'ViT-B-32/laion2b_s34b_b79k': {
        'export': 'ok', 'export_s': 70.2, 'int8_s': 13.0, 'fp32_mb': 579.7, 'int8_mb': 226.7,
        'int8_text': True, 'image_fp32_per_s': 6.74, 'image_int8_per_s': 13.08,
        'image_fp32_ratio': 1.0, 'image_int8_ratio': 1.0, 'speed_rounds': 7,
        'text_p50_ms': 33.1, 'cold_query_s': 1.608, 'trim': True, 'context_length': 77,
        'tokenizer': 'clip-bpe'},
    'ViT-B-32-SigLIP2-256/webli': {
        'export': 'ok', 'export_s': 56.2, 'int8_s': 23.0, 'fp32_mb': 1439.9, 'int8_mb': 931.8,
        'int8_text': True, 'image_fp32_per_s': 5.44, 'image_int8_per_s': 12.91,
        'image_fp32_ratio': 0.759, 'image_int8_ratio': 0.906, 'speed_rounds': 7,
        'text_p50_ms': 193.68, 'cold_query_s': 1.338, 'trim': False, 'context_length': 64,
        'tokenizer': 'hf'},
    'xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k': {
        'export': 'ok', 'export_s': 51.6, 'int8_s': 26.4, 'fp32_mb': 1399.3, 'int8_mb': 909.5,
        'int8_text': True, 'image_fp32_per_s': 7.36, 'image_int8_per_s': 13.31,
        'image_fp32_ratio': 1.06, 'image_int8_ratio': 1.222, 'speed_rounds': 7,
        'text_p50_ms': 110.11, 'cold_query_s': 1.171, 'trim': True, 'context_length': 77,
        'tokenizer': 'hf'},
    'ViT-B-32-256/datacomp_s34b_b86k': {
        'export': 'ok', 'export_s': 71.8, 'int8_s': 13.5, 'fp32_mb': 579.7, 'int8_mb': 226.7,
        'int8_text': True, 'image_fp32_per_s': 5.1, 'image_int8_per_s': 8.73,
        'image_fp32_ratio': 0.784, 'image_int8_ratio': 0.611, 'speed_rounds': 7,
        'text_p50_ms': 41.58, 'cold_query_s': 1.338, 'trim': True, 'context_length': 77,
        'tokenizer': 'clip-bpe'},
    'MobileCLIP2-S0/dfndr2b': {
        'export': 'ok', 'export_s': 81.9, 'int8_s': 9.2, 'fp32_mb': 287.8, 'int8_mb': 171.5,
        'int8_text': True, 'image_fp32_per_s': 6.29, 'image_int8_per_s': 6.97,
        'image_fp32_ratio': 0.921, 'image_int8_ratio': 0.523, 'speed_rounds': 7,
        'text_p50_ms': 23.08, 'cold_query_s': 0.807, 'trim': False, 'context_length': 77,
        'tokenizer': 'clip-bpe'},
    'MobileCLIP-S1/datacompdr': {
        'export': 'ok', 'export_s': 139.3, 'int8_s': 22.3, 'fp32_mb': 327.1, 'int8_mb': 204.7,
        'int8_text': True, 'image_fp32_per_s': 3.81, 'image_int8_per_s': 4.55,
        'image_fp32_ratio': 0.547, 'image_int8_ratio': 0.281, 'speed_rounds': 7,
        'text_p50_ms': 71.53, 'cold_query_s': 1.281, 'trim': False, 'context_length': 77,
        'tokenizer': 'clip-bpe'},
    'PE-Core-S-16-384/meta': {
        'export': 'ok', 'export_s': 172.8, 'int8_s': 15.9, 'fp32_mb': 335.9, 'int8_mb': 160.6,
        'int8_text': True, 'image_fp32_per_s': 1.15, 'image_int8_per_s': 2.01,
        'image_fp32_ratio': 0.25, 'image_int8_ratio': 0.176, 'speed_rounds': 7,
        'text_p50_ms': 61.29, 'cold_query_s': 2.301, 'trim': True, 'context_length': 32,
        'tokenizer': 'clip-bpe'},
    'MobileCLIP-S2/datacompdr': {
        'export': 'ok', 'export_s': 172.7, 'int8_s': 24.0, 'fp32_mb': 381.4, 'int8_mb': 251.9,
        'int8_text': True, 'image_fp32_per_s': 2.79, 'image_int8_per_s': 2.86,
        'image_fp32_ratio': 0.418, 'image_int8_ratio': 0.2, 'speed_rounds': 7,
        'text_p50_ms': 189.27, 'cold_query_s': 2.206, 'trim': False, 'context_length': 77,
        'tokenizer': 'clip-bpe'},
    'MobileCLIP2-S2/dfndr2b': {
        'export': 'ok', 'same_network_as': 'MobileCLIP-S2/datacompdr', 'export_s': 172.7,
        'int8_s': 24.0, 'fp32_mb': 381.4, 'int8_mb': 251.9, 'int8_text': True,
        'image_fp32_per_s': 3.23, 'image_int8_per_s': 3.53, 'image_fp32_ratio': 0.45,
        'image_int8_ratio': 0.176, 'speed_rounds': 7, 'text_p50_ms': 187.5,
        'cold_query_s': 2.128, 'trim': False, 'context_length': 77, 'tokenizer': 'clip-bpe'},
    'ViT-B-16/dfn2b': {
        'export': 'ok', 'export_s': 141.3, 'int8_s': 15.9, 'fp32_mb': 573.3, 'int8_mb': 220.3,
        'int8_text': True, 'image_fp32_per_s': 4.18, 'image_int8_per_s': 8.65,
        'image_fp32_ratio': 0.334, 'image_int8_ratio': 0.314, 'speed_rounds': 7,
        'text_p50_ms': 51.13, 'cold_query_s': 2.174, 'trim': True, 'context_length': 77,
        'tokenizer': 'clip-bpe'},
    'MobileCLIP2-B/dfndr2b': {
        'export': 'ok', 'export_s': 117.1, 'int8_s': 15.1, 'fp32_mb': 573.8, 'int8_mb': 220.8,
        'int8_text': True, 'image_fp32_per_s': 4.12, 'image_int8_per_s': 8.38,
        'image_fp32_ratio': 0.308, 'image_int8_ratio': 0.3, 'speed_rounds': 7,
        'text_p50_ms': 36.64, 'cold_query_s': 1.125, 'trim': True, 'context_length': 77,
        'tokenizer': 'clip-bpe'},
    'PE-Core-B-16/meta': {
        'export': 'ok', 'export_s': 135.5, 'int8_s': 32.1, 'fp32_mb': 1711.4, 'int8_mb': 578.7,
        'int8_text': True, 'image_fp32_per_s': 3.8, 'image_int8_per_s': 7.39,
        'image_fp32_ratio': 0.297, 'image_int8_ratio': 0.279, 'speed_rounds': 7,
        'text_p50_ms': 209.25, 'cold_query_s': 1.975, 'trim': True, 'context_length': 32,
        'tokenizer': 'clip-bpe'},
    'ViT-B-16-SigLIP2/webli': {
        'export': 'ok', 'export_s': 87.0, 'int8_s': 31.0, 'fp32_mb': 1433.4, 'int8_mb': 925.3,
        'int8_text': True, 'image_fp32_per_s': 4.07, 'image_int8_per_s': 8.38,
        'image_fp32_ratio': 0.317, 'image_int8_ratio': 0.289, 'speed_rounds': 7,
        'text_p50_ms': 195.21, 'cold_query_s': 1.203, 'trim': False, 'context_length': 64,
        'tokenizer': 'hf'},
    'nllb-clip-base-siglip/v1': {
        'export': 'ok', 'export_s': 214.1, 'int8_s': 64.0, 'fp32_mb': 1941.7, 'int8_mb': 1244.0,
        'int8_text': True, 'image_fp32_per_s': 1.24, 'image_int8_per_s': 2.62,
        'image_fp32_ratio': 0.1, 'image_int8_ratio': 0.097, 'speed_rounds': 7,
        'text_p50_ms': 203.38, 'cold_query_s': 1.48, 'trim': True, 'context_length': 77,
        'tokenizer': 'hf'},
}
# --- end of measured ---


def rows() -> list[dict[str, Any]]:
    """One dict per candidate: what is published about it (with the source of its figures),
    what was measured here (None where nothing was) and when, and whether the default rule
    picks it."""
    best, _ = default_choice()
    return [{"model": c.key, **asdict(c), "figures_source": SOURCES[c.figures],
             "measured": MEASURED.get(c.key), "measured_on": MEASURED_ON or None,
             "image_cost": image_cost(MEASURED.get(c.key)),
             "default_rule_pick": best is not None and best.key == c.key} for c in CANDIDATES]


def image_cost(measured: dict[str, Any] | None) -> float | None:
    """A model's image cost in units of ViT-B-32's: the inverse of its fp32 throughput ratio."""
    ratio = (measured or {}).get("image_fp32_ratio")
    return 1.0 / ratio if ratio else None


def default_choice(max_cost: float = MAX_IMAGE_COST, languages: str | None = None
                   ) -> tuple[Candidate | None, list[str]]:
    """The model the default rule picks: the best published MSCOCO text-to-image recall@1
    among the models whose weights' licence allows any use, that export to ONNX, and whose
    measured image cost is at most ``max_cost`` times ViT-B-32's (and, with ``languages``,
    that read those languages); with a line per model saying why it was passed over."""
    eligible, passed = [], []
    for c in CANDIDATES:
        if languages is not None and c.languages != languages:
            continue
        m = MEASURED.get(c.key)
        cost = image_cost(m)
        if c.any_use is not True:
            passed.append(f"{c.key}: licence {c.licence}" + (
                "" if "unverified" in c.licence else
                " (unverified)" if c.any_use is None else " (not any use)"))
        elif m is None or m.get("export") != "ok":
            passed.append(f"{c.key}: " + ("not measured" if m is None else
                                          f"no ONNX export ({m.get('reason', '')})"))
        elif cost is None or cost > max_cost:
            passed.append(f"{c.key}: image cost {cost:.2f}x ViT-B-32's" if cost else
                          f"{c.key}: image cost not measured")
        elif c.coco_t2i is None:
            passed.append(f"{c.key}: no published MSCOCO retrieval figure")
        else:
            eligible.append(c)
    best = max(eligible, key=lambda c: c.coco_t2i or 0.0, default=None)
    return best, passed


def _num(value: Any, fmt: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{fmt}}{suffix}"


def table_lines() -> list[str]:
    """The guide as text: measured costs, then published figures and licences, then the
    default rule's pick."""
    width = max(len(c.key) for c in CANDIDATES)
    when = MEASURED_ON.get("date", "not yet measured")
    lines = [f"Measured here ({when}; random weights of the real architecture; image throughput"
             " as a ratio to ViT-B-32's in the same run, images/s in brackets):",
             f"{'model':<{width}}  {'export':>7}  {'image fp32':>14}  {'image int8':>14}  "
             f"{'text ms':>7}  {'cold s':>6}  {'fp32 MB':>7}  {'int8 MB':>7}"]
    for c in CANDIDATES:
        m = MEASURED.get(c.key) or {}
        if m.get("export") == "failed":
            lines.append(f"{c.key:<{width}}  {'fails':>7}  stays on torch: {m.get('reason')}")
            continue
        fp32 = (f"{_num(m.get('image_fp32_ratio'), '.2f', 'x')} "
                f"({_num(m.get('image_fp32_per_s'), '.1f')})") if m else "-"
        int8 = (f"{_num(m.get('image_int8_ratio'), '.2f', 'x')} "
                f"({_num(m.get('image_int8_per_s'), '.1f')})") if m else "-"
        lines.append(f"{c.key:<{width}}  {_num(m.get('export_s'), '.0f', ' s'):>7}  "
                     f"{fp32:>14}  {int8:>14}  {_num(m.get('text_p50_ms'), '.1f'):>7}  "
                     f"{_num(m.get('cold_query_s'), '.2f'):>6}  "
                     f"{_num(m.get('fp32_mb'), '.0f'):>7}  {_num(m.get('int8_mb'), '.0f'):>7}")
    lines += [f"{key}: the same network as {m['same_network_as']} (config and "
              "preprocessing); its export was made by then, so the export times shown are "
              "those of the first" for key, m in MEASURED.items() if m.get("same_network_as")]
    lines += ["", "Published (percent: ImageNet zero-shot top-1; MSCOCO and Flickr30k "
              "text-to-image recall@1) and the weights' licence:",
              f"{'model':<{width}}  {'IN-1k':>5}  {'COCO':>5}  {'Flickr':>6}  {'languages':<9}  "
              f"{'source':<10}  licence"]
    for c in CANDIDATES:
        lines.append(f"{c.key:<{width}}  {_num(c.imagenet, '.1f'):>5}  "
                     f"{_num(c.coco_t2i, '.1f'):>5}  {_num(c.flickr_t2i, '.1f'):>6}  "
                     f"{c.languages:<9}  {c.figures:<10}  {c.licence}"
                     + ("" if c.any_use is not False else " (not for any use)"))
    best, _ = default_choice()
    lines += ["", f"Default rule: the best published MSCOCO text-to-image recall@1 among models "
              f"whose licence allows any use and whose image cost here is at most "
              f"{MAX_IMAGE_COST}x ViT-B-32's: {best.key if best else 'none measured yet'}"]
    if MEASURED_ON:
        code = f"code at {MEASURED_ON['code']}, " if MEASURED_ON.get("code") else ""
        lines.append(f"Measured with: {MEASURED_ON.get('command', '')} "
                     f"({code}{MEASURED_ON.get('machine', '')})")
    return lines


# --- queries in a script the collection's model was not trained for -----------------------------

SCRIPT_NAMES = {"jpn_Jpan": "Japanese kana", "kor_Hang": "Korean Hangul",
                "zho_Hans": "Chinese characters", "rus_Cyrl": "Cyrillic script",
                "arb_Arab": "Arabic script", "ell_Grek": "Greek script",
                "heb_Hebr": "Hebrew script", "tha_Thai": "Thai script",
                "hin_Deva": "Devanagari script"}
_said: set[tuple[str, str]] = set()


def candidate(spec: ModelSpec) -> Candidate | None:
    """The guide's entry for a model, if it has one."""
    return next((c for c in CANDIDATES if (c.name, c.pretrained) == (spec.name, spec.pretrained)),
                None)


def language_hint(spec: ModelSpec, texts: Sequence[str]) -> str | None:
    """One line for query texts written in a script that ``spec`` was not trained to read (a
    model of the guide trained on English text only), naming the multilingual model the
    guide's rule picks; None when there is nothing to say."""
    from .tokenizer import text_language

    found = candidate(spec)
    if found is None or found.languages != "English":
        return None
    script = next((SCRIPT_NAMES[code] for code in (text_language(t, "") for t in texts)
                   if code in SCRIPT_NAMES), None)
    if script is None:
        return None
    other, _ = default_choice(languages="many")
    fix = (f"a collection made with a multilingual model reads it: --model {other.name} "
           f"--pretrained {other.pretrained} when indexing into a new collection"
           if other else "a collection made with a multilingual model reads it")
    return (f"this query is written in {script}, and the collection's model {spec} was "
            f"trained on English text only: it matches such queries poorly; {fix} "
            "(see retrieval model list --available)")


def language_notice(spec: ModelSpec, texts: Sequence[str]) -> str | None:
    """:func:`language_hint`, also logged as a warning on the ``retrieval`` logger the first
    time in this process for this model and script."""
    hint = language_hint(spec, texts)
    if hint is not None:
        key = (str(spec), hint.split(",", 1)[0])
        if key not in _said:
            _said.add(key)
            log.warning("%s", hint)
    return hint
