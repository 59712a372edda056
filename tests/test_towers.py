"""Every model family of the model guide exports to ONNX with parity, on tiny models of each
family in the real layouts (tests/families.py): MobileCLIP (FastViT, fused for inference),
MobileCLIP2-B and PE-Core (causal text towers in custom-text models, cut after the end token;
PE-Core's rotary image tower), SigLIP 2 (a bidirectional text tower read at the last position,
a Gemma-style tokenizer that pads on the left). Full-size exports are measured by
benchmarks/models.py, not here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_imports, make_images
from families import write_family_model

from retrieval import Collection, ModelSpec, load_encoder
from retrieval.encoders.export import MAX_ABS_DIFF, MIN_COSINE, export_model
from retrieval.encoders.runtime import OnnxEncoder
from retrieval.encoders.tokenizer import ClipTokenizer, HFTokenizer

TEXTS = ["a red circle", "", "word " * 60, "一只猫", "A Photo of a DOG, on the beach!",
         "IMG_2041.JPG"]
# family -> (text tower cut after the end token, tokenizer class)
EXPECTED = {"mobileclip": (False, ClipTokenizer), "mobileclip2-b": (True, ClipTokenizer),
            "pe-core": (True, ClipTokenizer), "siglip2": (False, HFTokenizer)}


def _require_hf_tokenizers() -> None:
    pytest.importorskip("transformers", reason="SigLIP 2's tokenizer needs the multilingual "
                                               "extra (transformers)")


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_family_exports_with_parity(tmp_path: Path, family: str) -> None:
    if family == "siglip2":
        _require_hf_tokenizers()
    spec = f"local-dir:{write_family_model(tmp_path / family, family)}"
    torch_encoder = load_encoder(ModelSpec.parse(spec), "cpu")
    export = export_model(torch_encoder)
    assert export.ok, export.reason
    parity = export.manifest["parity"]
    for tower in ("image", "text"):
        assert parity[tower]["min_cos"] >= MIN_COSINE, parity
        assert parity[tower]["max_abs"] <= MAX_ABS_DIFF, parity
    trim, kind = EXPECTED[family]
    assert export.manifest["text"]["trim"] is trim
    onnx = OnnxEncoder(export)
    got, want = onnx.embed_texts(TEXTS), torch_encoder.embed_texts(TEXTS)
    assert np.abs(got - want).max() <= MAX_ABS_DIFF
    # a text's vector does not depend on the other texts of its batch (padding cut per batch)
    alone = np.stack([onnx.embed_texts([t])[0] for t in TEXTS])
    np.testing.assert_allclose(alone, got, atol=1e-5)
    tokens = onnx.tokenize(["a red circle"])
    assert isinstance(onnx._tokenizer, kind)
    context = export.manifest["text"]["context_length"]
    assert (tokens.shape[1] < context) is trim
    pixels = np.random.default_rng(0).integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    pixels = np.stack([np.asarray(_resized(p, torch_encoder.image_spec.size)) for p in pixels])
    np.testing.assert_allclose(onnx.embed_images(pixels), torch_encoder.embed_images(pixels),
                               atol=MAX_ABS_DIFF)


def _resized(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(pixels).resize((size[1], size[0])))


def test_mobileclip_image_tower_is_fused_for_inference(tmp_path: Path) -> None:
    """MobileOne branches are fused before export (as MobileCLIP's authors prescribe for
    inference); the torch model the collection keeps is left as it was."""
    import torch

    from retrieval.encoders.towers import for_inference

    encoder = load_encoder(ModelSpec.parse(
        f"local-dir:{write_family_model(tmp_path / 'm', 'mobileclip')}"), "cpu")
    fused = for_inference(encoder.model)
    assert fused is not encoder.model
    blocks = [m for m in fused.visual.modules() if hasattr(m, "reparam_conv")]
    assert blocks and all(m.reparam_conv is not None for m in blocks)
    assert all(m.reparam_conv is None for m in encoder.model.visual.modules()
               if hasattr(m, "reparam_conv"))
    pixels = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        np.testing.assert_allclose(fused.encode_image(x).numpy(),
                                   encoder.model.encode_image(x).numpy(), atol=1e-4)


def test_siglip2_collection_searches_without_torch(tmp_path: Path) -> None:
    _require_hf_tokenizers()
    spec = f"local-dir:{write_family_model(tmp_path / 'siglip2', 'siglip2')}"
    make_images(tmp_path / "imgs", 4)
    col = Collection(tmp_path / "c", model=spec)
    col.index([tmp_path / "imgs"], workers=0)
    col.add_texts(["a photo of a cat", "a red bicycle"])
    col.close()
    watch = {"torch", "open_clip", "transformers", "timm", "tokenizers", "onnxruntime"}
    modules, lines = cli_imports("--collection", tmp_path / "c", "search", "a cat on a bicycle",
                                 "-k", "6", "--json", watch=watch)
    assert modules == ["onnxruntime", "tokenizers"]
    hits = [json.loads(ln) for ln in lines if ln.startswith("{")]
    with_torch = Collection(tmp_path / "c", encoder=load_encoder(ModelSpec.parse(spec), "cpu"))
    assert [h["id"] for h in hits] == [h.id for h in with_torch.search("a cat on a bicycle",
                                                                       k=6)]
