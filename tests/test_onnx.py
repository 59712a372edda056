"""ONNX exports: parity with torch, identity and staleness, failures, int8, the text cache, and a
search process that never imports torch."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import cli_imports, make_images
from models import TINY_CONFIG, write_tiny_model

from retrieval import Collection, ModelMismatchError, ModelSpec, load_encoder
from retrieval.encoders.export import MAX_ABS_DIFF, MIN_COSINE, export_model, model_identity
from retrieval.encoders.export_store import MANIFEST, ExportStore
from retrieval.encoders.integrity import VERIFIED, check_export
from retrieval.encoders.runtime import OnnxEncoder
from retrieval.encoders.tokenizer import ClipTokenizer
from retrieval.interfaces.cli import cli


@pytest.fixture(scope="module")
def tiny_export(tiny_spec):
    encoder = load_encoder(ModelSpec.parse(tiny_spec), "cpu")
    return encoder, export_model(encoder)


def test_export_agrees_with_torch_on_real_inputs(tiny_export):
    torch_encoder, export = tiny_export
    assert export.ok, export.reason
    parity = export.manifest["parity"]
    for tower in ("image", "text"):
        assert parity[tower]["min_cos"] >= MIN_COSINE
        assert parity[tower]["max_abs"] <= MAX_ABS_DIFF
    assert export.manifest["text"]["trim"] is True  # causal CLIP text tower: cut after the end
    assert export.manifest["image_exporter"] == "traced"  # the fast exporter, not its fallback
    onnx = OnnxEncoder(export)
    texts = ["a red circle", "", "word " * 60, "一只猫", "a blue square at the top left"]
    got, want = onnx.embed_texts(texts), torch_encoder.embed_texts(texts)
    assert np.min(np.sum(got * want, axis=1)) >= MIN_COSINE
    assert np.abs(got - want).max() <= MAX_ABS_DIFF
    # A text's vector does not depend on what else is in its batch (padding is cut per batch).
    alone = np.stack([onnx.embed_texts([t])[0] for t in texts])
    np.testing.assert_allclose(alone, got, atol=1e-5)
    pixels = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(onnx.embed_images(pixels), torch_encoder.embed_images(pixels),
                               atol=MAX_ABS_DIFF)
    assert onnx.dim == torch_encoder.dim and onnx.image_spec == torch_encoder.image_spec
    assert abs(onnx.logit_scale - torch_encoder.logit_scale) < 1e-3
    # The export is self-contained: its tokenizer is ours, reading the files it wrote.
    tok = onnx.tokenize(["a red circle"])
    assert isinstance(onnx._tokenizer, ClipTokenizer) and tok.shape[1] == 5


def test_manifest_records_every_file_with_its_size_and_checksum(tiny_export):
    _, export = tiny_export
    files = export.manifest["files"]
    assert {"image.onnx", "image.onnx.data", "text.onnx", "text.onnx.data",
            "bpe_merges.txt"} <= set(files)
    assert set(files) == {p.name for p in export.folder.iterdir()} - {MANIFEST, VERIFIED}
    for name, recorded in files.items():
        data = (export.folder / name).read_bytes()
        assert recorded == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert export.tower_names("text", "fp32") == ["text.onnx", "text.onnx.data",
                                                  "bpe_merges.txt"]
    check_export(export, full=True)


def test_identity_is_the_weights_not_the_file_format(tmp_path, tiny_export):
    _, export = tiny_export
    st = load_encoder(ModelSpec.parse(
        f"local-dir:{write_tiny_model(tmp_path / 'st', fmt='safetensors')}"), "cpu")
    assert model_identity(st.model, st.loaded.config) == export.identity
    other = load_encoder(ModelSpec.parse(
        f"local-dir:{write_tiny_model(tmp_path / 'o', seed=5)}"), "cpu")
    assert model_identity(other.model, other.loaded.config) != export.identity


def test_index_exports_once_and_searches_on_onnx(tmp_path, tiny_spec):
    images = make_images(tmp_path / "imgs", 6)
    col = Collection(tmp_path / "c1", model=tiny_spec)
    col.index([tmp_path / "imgs"], workers=0)
    identity = col.model_identity
    store = ExportStore()
    assert identity and store.by_identity(identity) is not None
    folders = {e.folder for e in store.all()}
    col2 = Collection(tmp_path / "c2", model=tiny_spec)
    col2.index([tmp_path / "imgs"], workers=0)
    assert {e.folder for e in store.all()} == folders  # reused, not exported again
    col.close()
    fresh = Collection(tmp_path / "c1")
    hits = fresh.search(image=images[2], k=1)
    assert isinstance(fresh.encoder, OnnxEncoder)
    assert hits[0].path == str(images[2])
    torch_col = Collection(tmp_path / "c1", encoder=load_encoder(ModelSpec.parse(tiny_spec),
                                                                 "cpu"))
    want = [h.id for h in torch_col.search("a photo", k=6)]
    assert [h.id for h in fresh.search("a photo", k=6)] == want


def test_changed_checkpoint_never_reuses_a_stale_export(tmp_path):
    folder = write_tiny_model(tmp_path / "m", seed=1)
    spec = f"local-dir:{folder}"
    make_images(tmp_path / "imgs", 3)
    col = Collection(tmp_path / "c", model=spec)
    col.index([tmp_path / "imgs"], workers=0)
    first = col.model_identity
    store = ExportStore()
    assert store.for_spec(ModelSpec.parse(spec)).identity == first
    write_tiny_model(folder, seed=2)  # retrained in place
    assert store.for_spec(ModelSpec.parse(spec)) is None
    col.close()
    with pytest.raises(ModelMismatchError, match=r"weights of model .* changed"):
        Collection(tmp_path / "c").index([tmp_path / "imgs"], workers=0)
    # The collection's own searches keep using the export its vectors were made with.
    again = Collection(tmp_path / "c")
    assert again.search("x", k=1) and again.encoder.identity == first
    new = Collection(tmp_path / "new", model=spec)
    new.index([tmp_path / "imgs"], workers=0)
    assert new.model_identity not in (None, first)
    # Touching the weights file without changing it keeps the export (same identity).
    weights = folder / "open_clip_pytorch_model.bin"
    weights.write_bytes(weights.read_bytes())
    Collection(tmp_path / "new").index([tmp_path / "imgs"], workers=0)
    assert store.for_spec(ModelSpec.parse(spec)).identity == new.model_identity


def test_a_model_that_cannot_be_exported_stays_on_torch(tmp_path, caplog):
    cfg = json.loads(json.dumps(TINY_CONFIG))
    cfg["text_cfg"]["tokenizer_kwargs"] = {"reduction_mask": "simple"}  # random token dropping
    folder = write_tiny_model(tmp_path / "m", config=cfg)
    make_images(tmp_path / "imgs", 3)
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        col = Collection(tmp_path / "c", model=f"local-dir:{folder}")
        col.index([tmp_path / "imgs"], workers=0)
    assert "stays on torch" in caplog.text and "drops tokens at random" in caplog.text
    record = ExportStore().record(col.model_identity)
    assert record is not None and not record.ok and "random" in record.reason
    col.close()
    again = Collection(tmp_path / "c")
    assert again.search("a shape", k=2) and not isinstance(again.encoder, OnnxEncoder)
    result = CliRunner().invoke(cli, ["--collection", str(tmp_path / "c"), "model", "export"])
    assert result.exit_code == 1 and "cannot be exported" in result.output


def test_collection_without_export_warns_once_then_model_export(tmp_path, tiny_spec, caplog,
                                                                monkeypatch):
    make_images(tmp_path / "imgs", 4)
    col = Collection(tmp_path / "c", model=tiny_spec)
    col.index([tmp_path / "imgs"], workers=0)
    col._catalog.set_settings(model_identity=None)  # as collections made before exports
    col.close()
    monkeypatch.setenv("RETRIEVAL_EXPORTS", str(tmp_path / "empty-store"))
    import retrieval.encoders.resolve as resolve

    resolve._warned.clear()
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        for _ in range(2):
            c = Collection(tmp_path / "c")
            c.search("x", k=1)
            assert not isinstance(c.encoder, OnnxEncoder)
            c.close()
    assert caplog.text.count("no ONNX export") == 1
    assert "model export" in caplog.text
    result = CliRunner().invoke(cli, ["--collection", str(tmp_path / "c"), "model", "export"])
    assert result.exit_code == 0, result.output
    assert "parity with torch" in result.output
    c = Collection(tmp_path / "c")
    c.search("x", k=1)
    assert isinstance(c.encoder, OnnxEncoder) and c.model_identity == c.encoder.identity


def test_repeated_query_text_is_answered_from_the_cache(tmp_path, tiny_spec):
    make_images(tmp_path / "imgs", 4)
    Collection(tmp_path / "c", model=tiny_spec).index([tmp_path / "imgs"], workers=0)
    first = Collection(tmp_path / "c")
    want = first.search("a cached query", k=3)
    second = Collection(tmp_path / "c")
    got = second.search("a cached query", k=3)
    assert second._binding._encoder is None  # no model session was created
    assert [(h.id, round(h.score, 5)) for h in got] == [(h.id, round(h.score, 5)) for h in want]
    second.search("a new query", k=1)
    assert second._binding._encoder is not None


def test_int8_collection(tmp_path, tiny_spec):
    make_images(tmp_path / "imgs", 6)
    col = Collection(tmp_path / "c", model=tiny_spec, precision="int8")
    col.index([tmp_path / "imgs"], workers=0)
    assert col.precision == "int8" and col._binding.indexing_encoder().precision == "int8"
    export = ExportStore().by_identity(col.model_identity, "int8")
    agreement = export.manifest["variants"]["int8"]["agreement"]
    assert agreement["image"]["min_cos"] > 0.99
    assert "image.int8.onnx" in export.manifest["files"]  # the variant's files are checked too
    check_export(export, full=True)
    full = Collection(tmp_path / "f", model=tiny_spec)
    full.index([tmp_path / "imgs"], workers=0)
    ids = full._catalog.vector_ids("image").tolist()
    a = col._catalog.vectors(ids, col.dim)[1]
    b = full._catalog.vectors(ids, full.dim)[1]
    assert np.min(np.sum(a * b, axis=1)) > 0.99
    with pytest.raises(ModelMismatchError, match="holds int8 vectors"):
        Collection(tmp_path / "c", precision="fp32")
    result = CliRunner().invoke(cli, ["--collection", str(tmp_path / "f"), "index",
                                      str(tmp_path / "imgs"), "--precision", "int8"])
    assert result.exit_code == 1 and "holds fp32 vectors" in result.output


WATCHED = {"torch", "torchvision", "timm", "open_clip", "onnxruntime", "faiss", "sqlalchemy"}


def _modules(col: Path, *args: str) -> list[str]:
    return cli_imports("--collection", col, *args, watch=WATCHED)[0]


def test_search_never_imports_torch(tmp_path, tiny_spec):
    images = make_images(tmp_path / "imgs", 4)
    col = Collection(tmp_path / "c", model=tiny_spec)
    col.index([tmp_path / "imgs"], workers=0)
    col.add_texts(["a caption to find"])
    col.close()
    c = tmp_path / "c"
    assert _modules(c, "search", "a red circle") == ["faiss", "onnxruntime", "sqlalchemy"]
    assert _modules(c, "search", "--image", str(images[0]), "--target", "texts") == [
        "faiss", "onnxruntime", "sqlalchemy"]
    assert _modules(c, "search", "--like", "1") == ["faiss", "sqlalchemy"]  # no model at all
    assert _modules(c, "caption", str(images[1])) == ["faiss", "onnxruntime", "sqlalchemy"]
    assert _modules(c, "info") == ["faiss", "sqlalchemy"]
    assert _modules(c, "model", "list") == []
