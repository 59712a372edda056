"""Model loading through the real open_clip code paths, offline, and preprocessing fidelity."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import make_image
from models import TINY_CONFIG, write_tiny_model

from retrieval import (
    Collection,
    ModelError,
    ModelNotFoundError,
    ModelSpec,
    WeightsUnavailableError,
    load_encoder,
)
from retrieval.media import ImageSpec, load_image


def test_local_dir_embeddings_are_normalised_and_deterministic(encoder, tiny_spec):
    texts = encoder.embed_texts(["a red circle", "a blue square"])
    assert texts.shape == (2, 32) and texts.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, rtol=1e-5)
    again = load_encoder(ModelSpec.parse(tiny_spec), "cpu").embed_texts(["a red circle"])
    np.testing.assert_allclose(again[0], texts[0], atol=1e-6)
    pixels = np.random.default_rng(0).integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    imgs = encoder.embed_images(pixels)
    assert imgs.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(imgs, axis=1), 1.0, rtol=1e-5)
    assert encoder.image_spec.size == (32, 32)


def test_safetensors_layout_loads_same_weights(tmp_path, encoder):
    folder = write_tiny_model(tmp_path / "st", fmt="safetensors")
    enc = load_encoder(ModelSpec.parse(f"local-dir:{folder}"), "cpu")
    np.testing.assert_allclose(enc.embed_texts(["x"]), encoder.embed_texts(["x"]), atol=1e-6)


def test_builtin_name_with_checkpoint_file(tmp_path, encoder):
    import open_clip

    cfg_dir = tmp_path / "configs"
    cfg_dir.mkdir()
    (cfg_dir / "retrieval-test-tiny.json").write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(cfg_dir)
    ckpt = write_tiny_model(tmp_path / "w") / "open_clip_pytorch_model.bin"
    enc = load_encoder(ModelSpec.parse("retrieval-test-tiny", str(ckpt)), "cpu")
    np.testing.assert_allclose(enc.embed_texts(["x"]), encoder.embed_texts(["x"]), atol=1e-6)
    with pytest.raises(WeightsUnavailableError, match="checkpoint file not found"):
        load_encoder(ModelSpec.parse("retrieval-test-tiny", str(tmp_path / "nope.bin")), "cpu")
    # A checkpoint of another architecture is refused with the reason, not loaded partially.
    other = dict(TINY_CONFIG, embed_dim=16)
    bad = write_tiny_model(tmp_path / "bad", config=other) / "open_clip_pytorch_model.bin"
    with pytest.raises(ModelError, match="does not fit"):
        load_encoder(ModelSpec.parse("retrieval-test-tiny", str(bad)), "cpu")


def test_unknown_name_and_tag_are_clear():
    with pytest.raises(ModelNotFoundError, match=r"unknown model 'NoSuchNet-7'"):
        load_encoder(ModelSpec.parse("NoSuchNet-7", "x"), "cpu")
    with pytest.raises(ModelNotFoundError, match=r"known tags: .*laion2b_s34b_b79k"):
        load_encoder(ModelSpec.parse("ViT-B-32", "no_such_tag"), "cpu")


def test_offline_weights_missing_says_how_without_touching_the_network(tmp_path, monkeypatch):
    import socket

    def no_network(*_a, **_k):
        raise AssertionError("offline mode must answer from the cache, not the network")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(WeightsUnavailableError) as info:
        load_encoder(ModelSpec.parse("ViT-B-32", "laion2b_s34b_b79k"), "cpu")
    msg = str(info.value)
    assert "\n" not in msg
    assert "not in the local cache" in msg and "--pretrained" in msg


def test_local_dir_problems(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="folder not found"):
        load_encoder(ModelSpec.parse(f"local-dir:{tmp_path / 'none'}"), "cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsUnavailableError, match=r"no open_clip_config\.json"):
        load_encoder(ModelSpec.parse(f"local-dir:{tmp_path / 'empty'}"), "cpu")
    folder = write_tiny_model(tmp_path / "noweights")
    (folder / "open_clip_pytorch_model.bin").unlink()
    with pytest.raises(WeightsUnavailableError, match="no weights file"):
        load_encoder(ModelSpec.parse(f"local-dir:{folder}"), "cpu")


def test_hf_hub_model_from_offline_cache(tmp_path, tiny_model, monkeypatch):
    """An ``hf-hub:`` model already in the Hugging Face cache loads with no network (in this
    process: huggingface_hub pointed at the cache as ``HF_HUB_CACHE`` would point it)."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    repo = cache / "models--example--tiny-clip"
    commit = "0" * 40
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name in ("open_clip_config.json", "open_clip_pytorch_model.bin"):
        shutil.copy(tiny_model / name, snap / name)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    hub = load_encoder(ModelSpec.parse("hf-hub:example/tiny-clip"), "cpu")
    ref = load_encoder(ModelSpec.parse(f"local-dir:{tiny_model}"), "cpu")
    assert hub.dim == 32
    np.testing.assert_allclose(hub.embed_texts(["a red circle"]),
                               ref.embed_texts(["a red circle"]), atol=1e-5)
    # The same repo id that is not cached gives one clear line.
    with pytest.raises(WeightsUnavailableError) as err:
        load_encoder(ModelSpec.parse("hf-hub:example/absent"), "cpu")
    assert "hf-hub:example/absent is not in the local Hugging Face cache" in str(err.value)
    assert "\n" not in str(err.value)


def test_collection_refuses_other_model(tmp_path, encoder, tiny_spec):
    col = Collection(tmp_path / "c", model=tiny_spec)
    col.add_texts(["hello"])
    other = write_tiny_model(tmp_path / "other", seed=1)
    from retrieval import ModelMismatchError

    with pytest.raises(ModelMismatchError, match="holds vectors of model"):
        Collection(tmp_path / "c", model=f"local-dir:{other}")
    # Re-opening without a model uses the bound one.
    assert Collection(tmp_path / "c").spec == ModelSpec.parse(tiny_spec)


@pytest.mark.parametrize("mode,size", [("shortest", (32, 32)), ("shortest", (24, 40)),
                                       ("squash", (32, 32)), ("longest", (32, 32))])
@pytest.mark.parametrize("shape", [(97, 61), (40, 120), (32, 32), (300, 17)])
@pytest.mark.parametrize("interpolation,fill", [("bicubic", 0), ("bilinear", 127)])
def test_preprocessing_matches_open_clip(tmp_path, mode, size, shape, interpolation, fill):
    """Pixels fed to the model equal open_clip's own evaluation transform (resize mode,
    interpolation, crop or pad with the fill colour); normalisation is checked with the whole
    encoder, in the ONNX parity tests."""
    import torch
    from open_clip.transform import image_transform

    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    path = make_image(tmp_path / "x.png", seed=3, size=shape)
    spec = ImageSpec(size=size, mean=mean, std=std, resize_mode=mode,
                     interpolation=interpolation, fill_color=fill)
    ours, _ = load_image(path, spec)
    from PIL import Image

    ref = image_transform(size, is_train=False, mean=mean, std=std, resize_mode=mode,
                          interpolation=interpolation, fill_color=fill)(Image.open(path))
    ours_t = (torch.from_numpy(ours.copy()).permute(2, 0, 1).float() / 255.0
              - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    assert ours_t.shape == ref.shape
    assert float((ours_t - ref).abs().max()) < 1e-4


def test_jpeg_draft_decode_is_close_to_full_decode(tmp_path):
    """Reduced-scale JPEG decoding changes the model input only slightly."""
    from PIL import Image

    from retrieval.media import open_image, to_model_input

    path = make_image(tmp_path / "big.jpg", seed=5, size=(1600, 1200))
    spec = ImageSpec(size=(224, 224), mean=(0.5,) * 3, std=(0.5,) * 3)
    fast = to_model_input(open_image(path), spec, draft=True).astype(np.float32)
    full = to_model_input(Image.open(path), spec, draft=False).astype(np.float32)
    assert fast.shape == full.shape == (224, 224, 3)
    assert np.abs(fast - full).mean() < 2.0  # out of 255


def test_heic_is_indexed_when_pillow_heif_is_installed(tmp_path, encoder):
    pillow_heif = pytest.importorskip("pillow_heif")
    from PIL import Image

    from retrieval import Collection

    src = make_image(tmp_path / "src.png", seed=4, size=(60, 40))
    (tmp_path / "imgs").mkdir()
    pillow_heif.from_pillow(Image.open(src)).save(tmp_path / "imgs" / "photo.heic")
    col = Collection(tmp_path / "c", encoder=encoder)
    summary = col.index([tmp_path / "imgs"], workers=0)
    assert (summary.added, summary.failed) == (1, 0), summary.errors
    hit = col.search(image=tmp_path / "imgs" / "photo.heic", k=1)[0]
    assert hit.path.endswith("photo.heic") and hit.metadata["width"] == 60


def test_synthetic_data_is_deterministic(tmp_path):
    from retrieval.training.synthetic import write_dataset

    a = write_dataset(tmp_path / "a", 12, seed=9, size=32)
    b = write_dataset(tmp_path / "b", 12, seed=9, size=32)
    c = write_dataset(tmp_path / "c", 12, seed=10, size=32)
    assert [s for _, s in a] == [s for _, s in b] != [s for _, s in c]
    for (pa, _), (pb, _) in zip(a, b, strict=True):
        assert pa.read_bytes() == pb.read_bytes()
        assert pa.with_suffix(".txt").read_text() == pb.with_suffix(".txt").read_text()
