"""Training: from scratch and fine-tuning, bad data, resume, and the local-dir output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image
from models import TINY_CONFIG

from retrieval import Collection, ModelSpec, load_encoder
from retrieval.training import TrainConfig, TrainingError, train
from retrieval.training.data import read_pairs
from retrieval.training.model import retrieval_recall
from retrieval.training.synthetic import write_dataset


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("shapes")
    write_dataset(folder, 64, seed=3, size=32)
    return folder


@pytest.fixture(scope="module")
def tiny_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("arch") / "tiny.json"
    path.write_text(json.dumps(TINY_CONFIG))
    return path


def _cfg(data: Path, out: Path, arch: Path, **kw) -> TrainConfig:
    base = dict(data=str(data), out=str(out), model=str(arch), pretrained=None,
                from_scratch=True, epochs=3, batch_size=16, lr=2e-3, seed=0, val_fraction=0.25,
                workers=0, early_stop=False)
    base.update(kw)
    return TrainConfig(**base)


def test_from_scratch_learns_and_writes_a_local_dir_model(shapes, tiny_json, tmp_path):
    events = []
    result = train(_cfg(shapes / "captions.jsonl", tmp_path / "m", tiny_json, epochs=4),
                   progress=events.append)
    losses = [e["loss"] for e in result.epochs]
    assert len(losses) == 4 and losses[-1] < losses[0] * 0.9, losses
    for e in result.epochs:  # recall@k reported each epoch, in [0, 1], monotone in k
        for d in ("t2i", "i2t"):
            assert 0 <= e[f"{d}_r@1"] <= e[f"{d}_r@5"] <= e[f"{d}_r@10"] <= 1
    assert {e.phase for e in events} >= {"decode", "train", "eval"}
    assert result.train_images == 48 and result.val_images == 16
    assert (tmp_path / "m" / "open_clip_config.json").exists()
    assert (tmp_path / "m" / "open_clip_model.safetensors").exists()
    # The output is a model like any other: index and search with it through the engine.
    col = Collection(tmp_path / "c", model=result.model)
    col.index([shapes], workers=0)
    path = sorted(shapes.glob("*.png"))[5]
    assert col.search(image=path, k=1)[0].path == str(path)


def test_finetune_with_locked_image_tower(shapes, tiny_spec, encoder, tmp_path):
    cfg = TrainConfig(data=str(shapes), out=str(tmp_path / "ft"), model=tiny_spec,
                      pretrained=None, epochs=1, batch_size=16, lr=1e-3, val_fraction=0.25,
                      lock_image=True, workers=0)
    result = train(cfg)
    tuned = load_encoder(ModelSpec.parse(result.model), "cpu")
    pixels = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(tuned.embed_images(pixels), encoder.embed_images(pixels),
                               atol=1e-5)  # locked: the image tower did not move
    assert not np.allclose(tuned.embed_texts(["a red circle"]),
                           encoder.embed_texts(["a red circle"]), atol=1e-4)


def test_resume_continues_exactly(shapes, tiny_json, tmp_path):
    full = train(_cfg(shapes, tmp_path / "full", tiny_json, epochs=2))

    def interrupt(p):
        if p.phase == "train" and p.epoch == 2 and p.step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(_cfg(shapes, tmp_path / "part", tiny_json, epochs=2), progress=interrupt)
    assert len(list((tmp_path / "part" / "checkpoints").glob("epoch_*.pt"))) == 1
    with pytest.raises(TrainingError, match="--resume"):
        train(_cfg(shapes, tmp_path / "part", tiny_json, epochs=2))
    resumed = train(_cfg(shapes, tmp_path / "part", tiny_json, epochs=2), resume=True)
    assert [e["epoch"] for e in resumed.epochs] == [1, 2]
    assert resumed.epochs[1]["loss"] == pytest.approx(full.epochs[1]["loss"], rel=1e-4)
    a = load_encoder(ModelSpec.parse(full.model), "cpu").embed_texts(["a red circle"])
    b = load_encoder(ModelSpec.parse(resumed.model), "cpu").embed_texts(["a red circle"])
    np.testing.assert_allclose(a, b, atol=1e-4)
    with pytest.raises(TrainingError, match="batch_size"):
        train(_cfg(shapes, tmp_path / "part", tiny_json, epochs=2, batch_size=8), resume=True)


def test_a_run_killed_before_its_first_checkpoint_starts_again_from_scratch(
        shapes, tiny_json, tmp_path):
    """A run killed after writing its first epoch's weights but before its checkpoint leaves
    weights and no checkpoint: the run started again from scratch must not start from those
    weights (open_clip loads any it finds beside the config it builds from)."""
    full = train(_cfg(shapes, tmp_path / "full", tiny_json, epochs=1))
    stale = tmp_path / "again"
    stale.mkdir()
    for name in ("open_clip_config.json", "open_clip_model.safetensors"):
        (stale / name).write_bytes((tmp_path / "full" / name).read_bytes())
    again = train(_cfg(shapes, stale, tiny_json, epochs=1))
    assert again.epochs[0]["loss"] == pytest.approx(full.epochs[0]["loss"], rel=1e-6)


def test_bad_data_is_skipped_and_reported(tmp_path, tiny_json):
    data = tmp_path / "data"
    for i in range(12):
        make_image(data / f"ok{i}.png", seed=i)
        (data / f"ok{i}.txt").write_text(f"picture number {i}\nanother caption {i}\n")
    (data / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (data / "broken.txt").write_text("a broken picture")
    make_image(data / "nocaption.png", seed=99)
    make_image(data / "empty.png", seed=98)
    (data / "empty.txt").write_text("  \n")
    pairs, _ = read_pairs(data)
    assert len(pairs[str(data / "ok0.png")]) == 2  # one caption per line
    result = train(_cfg(data, tmp_path / "m", tiny_json, epochs=1, batch_size=4))
    reasons = {Path(e.path).name: e.reason for e in result.skipped}
    assert "no caption" in reasons["nocaption.png"]
    assert "empty caption" in reasons["empty.txt"]
    assert "not a recognised image" in reasons["broken.png"]
    assert result.train_images + result.val_images == 12


def test_csv_and_jsonl_inputs(tmp_path):
    imgs = [make_image(tmp_path / "img" / f"{i}.jpg", seed=i) for i in range(3)]
    (tmp_path / "d.csv").write_text(
        "image,caption\nimg/0.jpg,a cat\nimg/0.jpg,a small cat\nimg/1.jpg,a dog\n"
        "img/missing.jpg,a ghost\nimg/2.jpg,\n")
    pairs, errors = read_pairs(tmp_path / "d.csv")
    assert pairs == {str(imgs[0]): ["a cat", "a small cat"], str(imgs[1]): ["a dog"]}
    assert {e.reason for e in errors} == {"image file not found", "empty caption"}
    (tmp_path / "d.jsonl").write_text(
        json.dumps({"image": "img/2.jpg", "captions": ["x", "y"]}) + "\nnot json\n")
    pairs, errors = read_pairs(tmp_path / "d.jsonl")
    assert pairs == {str(imgs[2]): ["x", "y"]} and "d.jsonl:2" in errors[0].path
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    from retrieval import InputError

    with pytest.raises(InputError, match="needs an image column"):
        read_pairs(tmp_path / "bad.csv")


def test_too_little_data_is_a_clear_error(tmp_path, tiny_json):
    for i in range(5):
        make_image(tmp_path / "d" / f"{i}.png", seed=i)
        (tmp_path / "d" / f"{i}.txt").write_text(f"caption {i}")
    with pytest.raises(TrainingError, match="needs at least 20 usable images, found 5"):
        train(_cfg(tmp_path / "d", tmp_path / "m", tiny_json, val_fraction=0.1))


def test_retrieval_recall_counts_any_caption_of_an_image():
    img = np.eye(3, dtype=np.float32)
    txt = np.array([[1, 0, 0], [0, 1, 0], [0, 0.9, 0.1], [0, 0, 1]], dtype=np.float32)
    owner = np.array([0, 1, 2, 2])
    r = retrieval_recall(img, txt, owner, ks=(1, 2))
    assert r["t2i_r@1"] == 0.75  # caption 2 ("0.9 toward image 1") misses at k=1
    assert r["t2i_r@2"] == 1.0
    assert r["i2t_r@1"] == 1.0  # image 2's best caption (3) is its own
