"""Exporting an open_clip model's two towers to ONNX, once per model identity, parity-checked.

The image tower takes uint8 pixels (N, H, W, 3) as the decoders produce them and does the
normalisation itself; the text tower takes int64 token ids. Both return L2-normalised float32
vectors, with a dynamic batch axis (and a dynamic sequence axis where it is exact to cut after
the end token; what each family's towers are exported as is :mod:`.towers`). torch's ONNX
exporter writes the weights as external data, which ONNX Runtime memory-maps when a session is
created. The image tower goes through the tracing exporter first (a fraction of the time; kept
only where it passes the parity check), the text tower through the dynamo exporter
(``dynamo=True``), which keeps its sequence axis dynamic.

Before an export is committed, it must agree with torch on a probe batch of real images (drawn,
encoded as PNG and JPEG, decoded by the same code as indexing) and of texts (tricky ones
included): cosine >= 0.9999 and max abs difference <= 1e-4 on normalised vectors, and token ids
equal to open_clip's own tokenizer. A model that fails stays on torch; the failure is recorded
with its reason so it is not tried on every run.

The manifest records the size and SHA-256 of every file (see :mod:`.integrity`); an export
whose files no longer match them is made again instead of being reused.

The optional int8 variant is ONNX Runtime's dynamic quantisation (int8 weights, activations
quantised on the fly) of the image tower, and of the text tower when its vectors stay within
cosine 0.995 of full precision on the probe texts.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import disk_full, is_disk_full
from ..fileio import atomic_path
from ..media import ImageSpec
from .export_store import (
    EXPORT_FORMAT,
    MANIFEST,
    Export,
    ExportStore,
    file_state,
    image_spec_dict,
)
from .integrity import check_export, intact, record_files
from .openclip import OpenClipEncoder
from .quiet import quiet
from .runtime import OnnxEncoder
from .tokenizer import ClipTokenizer, HFTokenizer
from .towers import ExportFailed, for_inference, tokenizer_for_export, towers

log = logging.getLogger("retrieval")

OPSET = 18
MIN_COSINE = 0.9999
MAX_ABS_DIFF = 1e-4
INT8_TEXT_MIN_COSINE = 0.995
PROBE_TEXTS = (
    "a photo of a dog", "a red bicycle leaning against a brick wall", "A Small BLUE square",
    "two cats sleeping on a sofa, next to a lamp.", "the Eiffel Tower at night",
    "“curly quotes” and ‘single’ ones", "fish &amp; chips &lt;b&gt;", "café naïve résumé",
    "ＦＵＬＬ－ＷＩＤＴＨ　ｌｅｔｔｅｒｓ", "一只猫在沙发上睡觉", "日本の桜 한국어 텍스트",
    "🐶 🚲 👍🏽",
    "", "   ", "<start_of_text> literal <end_of_text>", "I'm sure they'll've been there",
    "IMG_2041.JPG 3.5 x 1,000", "a " + "very " * 100 + "long caption",
)


def model_identity(model: Any, config: dict[str, Any]) -> str:
    """SHA-256 over the model's config and every tensor of its state (names, dtypes, shapes,
    bytes): the same weights give the same identity whatever file format they came in."""
    import torch

    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def encoder_identity(encoder: OpenClipEncoder) -> str:
    """The identity of a loaded encoder (computed once; hashing ViT-B-32 takes about 0.5 s)."""
    cached = getattr(encoder, "_identity", None)
    if cached is None:
        cached = model_identity(encoder.model, encoder.loaded.config)
        encoder._identity = cached  # type: ignore[attr-defined]
    return str(cached)


def _export(module: Any, example: Any, input_name: str, dynamic: dict[int, Any],
            path: Path) -> None:
    import torch

    with quiet(), torch.no_grad():
        program = torch.onnx.export(
            module, (example,), input_names=[input_name], output_names=["vectors"],
            dynamic_shapes=(dynamic,),
            opset_version=OPSET, dynamo=True, external_data=True, verbose=False)
        program.save(str(path), external_data=True)


def _export_traced(module: Any, example: Any, input_name: str, path: Path) -> None:
    """The image tower through torch's tracing exporter (``dynamo=False``): a fraction of the
    dynamo exporter's time for the same graph, sessions as fast (README, "Models"), with the
    weights moved to external data as the dynamo exporter writes them. Only the batch axis
    is dynamic: tracing would bake a sequence length into a text tower, and no parity probe
    of one length would see it; the parity check decides whether the trace is kept."""
    import onnx
    import torch

    # Traced with autograd on: under no_grad, nn.MultiheadAttention takes its fused fast path
    # (aten::_native_multi_head_attention), which has no ONNX form.
    with quiet(), torch.enable_grad():
        torch.onnx.export(module, (example,), str(path), input_names=[input_name],
                          output_names=["vectors"], dynamic_axes={input_name: {0: "batch"}},
                          opset_version=OPSET, dynamo=False)
    graph = onnx.load(str(path))
    onnx.save_model(graph, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=1024)


def _image_parity(onnx: OnnxEncoder, pixels: np.ndarray, want: np.ndarray) -> dict[str, float]:
    got = _agreement(onnx.embed_images(pixels), want)
    one = _agreement(onnx.embed_images(pixels[:1]), want[:1])  # the batch axis is dynamic
    return {**got, "max_abs": max(got["max_abs"], one["max_abs"]),
            "min_cos": min(got["min_cos"], one["min_cos"])}


# --- probes -------------------------------------------------------------------------------------

def probe_pixels(spec: ImageSpec) -> np.ndarray:
    """Real images for the parity check: drawn scenes and noise photos of several sizes and
    aspect ratios, written as PNG and JPEG and decoded by the indexing code."""
    import random

    from PIL import Image

    from ..media import load_image
    from ..training.synthetic import random_scene, render

    rng = random.Random(0)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (w, h) in enumerate([(96, 96), (160, 90), (75, 200), (333, 250), (40, 40),
                                    (640, 480)]):
            scene = render(random_scene(rng), size=max(w, h), seed=i).resize((w, h))
            noise = np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)
            for img, ext in ((scene, ".png"), (Image.fromarray(noise), ".jpg")):
                path = Path(tmp) / f"probe{i}{ext}"
                img.save(path)
                out.append(load_image(path, spec)[0])
    return np.stack(out)


def _agreement(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    cos = np.sum(a * b, axis=1)
    return {"min_cos": float(cos.min()), "mean_cos": float(cos.mean()),
            "max_abs": float(np.abs(a - b).max()), "n": len(a)}


def _agrees(got: dict[str, float]) -> bool:
    return got["min_cos"] >= MIN_COSINE and got["max_abs"] <= MAX_ABS_DIFF


def _check(name: str, got: dict[str, float]) -> None:
    if not _agrees(got):
        raise ExportFailed(
            f"its ONNX {name} tower differs from torch (min cosine {got['min_cos']:.6f}, max "
            f"abs difference {got['max_abs']:.2e}; needed >= {MIN_COSINE} and <= "
            f"{MAX_ABS_DIFF:g})")


# --- exporting ------------------------------------------------------------------------------------

def export_model(encoder: OpenClipEncoder, *, store: ExportStore | None = None,
                 int8: bool = False, force: bool = False,
                 on_event: Callable[[str], None] | None = None) -> Export:
    """The export of a loaded model (made now when there is none), with the int8 variant when
    asked for. A model that cannot be exported faithfully returns its recorded failure
    (``export.ok`` is False, ``export.reason`` says why)."""
    store = store or ExportStore()
    try:
        return _export_model(encoder, store, int8, force, on_event or (lambda _m: None))
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full("the model's ONNX export", store.root) from None
        raise


def _export_model(encoder: OpenClipEncoder, store: ExportStore, int8: bool, force: bool,
                  say: Callable[[str], None]) -> Export:
    identity = encoder_identity(encoder)
    sources = [s for s in (file_state(p) for p in encoder.loaded.sources) if s is not None]
    with store.lock(identity):
        existing = store.record(identity)
        # A failure is final for these library versions, an export while its files hash to
        # their checksums; unless forced.
        if existing is not None and not force and (intact(existing, full=True) if existing.ok
                                                   else existing.manifest.get("versions")
                                                   == _versions()):
            if existing.manifest.get("sources") != sources and sources:
                existing.manifest["sources"] = sources  # same weights, files touched or moved
                store.write_manifest(existing.folder, existing.manifest)
            if existing.ok and int8 and not existing.has("int8"):
                say(f"quantising {encoder.spec} to int8")
                existing = quantize_export(store, existing)
            return existing
        int8 = int8 or (existing is not None and existing.ok and existing.has("int8"))
        say(f"exporting {encoder.spec} to ONNX (once per model)")
        final = store.folder_for(encoder.spec, identity)
        staging = Path(tempfile.mkdtemp(prefix=f".staging-{identity[:16]}-", dir=store.root))
        manifest: dict[str, Any] = {
            "format": EXPORT_FORMAT, "identity": identity, "spec": encoder.spec.to_dict(),
            "sources": sources, "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
            "versions": _versions(), "dim": encoder.dim, "logit_scale": encoder.logit_scale,
            "image_spec": image_spec_dict(encoder.image_spec)}
        try:
            manifest.update(_write_towers(encoder, staging))
            manifest["files"] = record_files(staging)
            manifest["status"] = "ok"
        except ExportFailed as exc:
            manifest.update(status="failed", reason=str(exc).removeprefix("its "))
        except Exception as exc:  # the exporter's own errors on an unusual model
            if is_disk_full(exc):  # not the model's fault: nothing is recorded
                shutil.rmtree(staging, ignore_errors=True)
                raise disk_full("the model's ONNX export", store.root) from None
            text = " ".join(str(exc).split())[:300]
            manifest.update(status="failed",
                            reason=f"the ONNX exporter failed: {type(exc).__name__}: {text}")
        if manifest["status"] != "ok":
            for p in staging.iterdir():
                p.unlink()
            log.warning("%s stays on torch: %s", encoder.spec, manifest["reason"])
        store.write_manifest(staging, manifest)
        export = Export(store.commit(staging, final, replaces=existing), manifest)
        if export.ok and int8:
            say(f"quantising {encoder.spec} to int8")
            export = quantize_export(store, export)
        return export


def _versions() -> dict[str, str]:
    import onnxruntime
    import open_clip
    import torch

    return {"torch": torch.__version__, "open_clip": open_clip.__version__,
            "onnxruntime": onnxruntime.__version__, "format": str(EXPORT_FORMAT)}


def _export_text(module: Any, tokenizer: ClipTokenizer | HFTokenizer, tokens: np.ndarray,
                 trim: bool, batch: Any, path: Path) -> None:
    """The text tower, with a dynamic sequence axis when it is cut after the end token."""
    import torch

    ctx = tokenizer.context_length
    axes: dict[int, Any] = {0: batch}
    example = torch.from_numpy(tokens[:2])
    if trim:
        axes[1] = torch.export.Dim("seq", min=2, max=ctx)
        example = example[:, :min(ctx, 8)].clone()
        if isinstance(tokenizer, ClipTokenizer):
            example[:, -1] = int(tokenizer.eot_id)
    _export(module, example, "token_ids", axes, path)


def _write_towers(encoder: OpenClipEncoder, folder: Path) -> dict[str, Any]:
    """Export both towers into ``folder`` and check them; the manifest's parts."""
    import torch

    model = encoder.model
    if encoder.device != "cpu" or next(model.parameters()).dtype != torch.float32:
        model = copy.deepcopy(model).to("cpu", torch.float32)
    tokenizer = tokenizer_for_export(encoder.loaded.tokenizer)
    texts = list(PROBE_TEXTS)
    ref_tokens = encoder.loaded.tokenizer(texts).numpy()
    if not np.array_equal(tokenizer(texts), ref_tokens):
        raise ExportFailed("its tokenizer cannot be reproduced without torch (token ids differ)")
    image, text, trim = towers(for_inference(model), encoder.image_spec.mean,
                               encoder.image_spec.std)
    # cutting the padding is exact only where the padding comes after the text
    trim = trim and getattr(tokenizer, "padding_side", "right") == "right"
    h, w = encoder.image_spec.size
    batch = torch.export.Dim("batch", min=1, max=65536)
    example = torch.zeros((2, h, w, 3), dtype=torch.uint8)

    def by_dynamo() -> str:
        _export(image, example, "pixels", {0: batch}, folder / "image.onnx")
        return "dynamo"

    exporter = "traced"
    try:
        _export_traced(image, example, "pixels", folder / "image.onnx")
    except Exception:  # what tracing cannot take, the dynamo exporter may
        exporter = by_dynamo()
    _export_text(text, tokenizer, ref_tokens, trim, batch, folder / "text.onnx")
    tokenizer.save(folder)
    ctx = tokenizer.context_length
    parts: dict[str, Any] = {
        "text": {"tokenizer": tokenizer.describe(), "trim": trim, "context_length": ctx},
        "variants": {"fp32": {"image": "image.onnx", "text": "text.onnx"}}}
    onnx = OnnxEncoder(Export(folder, {"format": EXPORT_FORMAT, "status": "ok", "identity": "",
                                       "spec": encoder.spec.to_dict(), "dim": encoder.dim,
                                       "image_spec": image_spec_dict(encoder.image_spec),
                                       **parts}), check="off")
    pixels = probe_pixels(encoder.image_spec)
    want_images = encoder.embed_images(pixels)
    got = _image_parity(onnx, pixels, want_images)
    if exporter == "traced" and not _agrees(got):  # a trace that differs: export it again
        for stale in folder.glob("image.onnx*"):
            stale.unlink()
        exporter = by_dynamo()
        onnx = OnnxEncoder(onnx.export, "fp32", check="off")
        got = _image_parity(onnx, pixels, want_images)
    _check("image", got)
    parts["image_exporter"] = exporter
    text_got = _agreement(onnx.embed_texts(texts), encoder.embed_texts(texts))
    _check("text", text_got)
    parts["parity"] = {"image": got, "text": text_got, "token_ids_equal": len(texts)}
    return parts


def quantize_export(store: ExportStore, export: Export) -> Export:
    """Add the int8 variant to an export: the towers quantised dynamically (needs ONNX Runtime,
    not torch), with their agreement with full precision recorded."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folder = export.folder
    check_export(export)  # quantising a damaged tower would only hide the damage
    for tower in ("image", "text"):
        with quiet(), atomic_path(folder / f"{tower}.int8.onnx") as tmp:
            quantize_dynamic(folder / f"{tower}.onnx", tmp, weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul", "Gemm"],
                             extra_options={"MatMulConstBOnly": True})
    manifest = json.loads(json.dumps(export.manifest))
    variants = manifest["variants"]
    variants["int8"] = {"image": "image.int8.onnx", "text": "text.int8.onnx"}
    full = OnnxEncoder(export, "fp32", check="off")  # checked above
    quant = OnnxEncoder(Export(folder, manifest), "int8", check="off")  # written just now
    texts = [t for t in PROBE_TEXTS if t.strip()]
    text_agree = _agreement(quant.embed_texts(texts), full.embed_texts(texts))
    pixels = probe_pixels(export.image_spec)
    image_agree = _agreement(quant.embed_images(pixels), full.embed_images(pixels))
    if text_agree["min_cos"] < INT8_TEXT_MIN_COSINE:
        variants["int8"]["text"] = None  # the text tower stays at full precision
        (folder / "text.int8.onnx").unlink(missing_ok=True)
    variants["int8"]["agreement"] = {"image": image_agree, "text": text_agree}
    manifest["files"] = {**export.files, **record_files(
        folder, [f"{t}.int8.onnx" for t in ("image", "text") if variants["int8"][t]])}
    store.write_manifest(folder, manifest)
    return Export(folder, manifest)


__all__ = ["MANIFEST", "ExportFailed", "encoder_identity", "export_model", "model_identity",
           "probe_pixels", "quantize_export"]
