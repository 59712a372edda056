"""Weights and checkpoints a user or a folder supplies are loaded without running code: a pickle
payload (an object whose ``__reduce__`` creates a marker file) saved with ``torch.save`` where
each loading path looks for weights is refused with one line, and the marker never appears.

Paths: ``train --resume`` (``OUT/checkpoints/epoch_N.pt``), ``--pretrained FILE``, a
``local-dir:`` model's ``.bin`` weights, and a captioner's ``local-dir:`` weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from coca import TINY_COCA_CONFIG
from conftest import assert_one_error_line, make_images, run_cli
from models import TINY_CONFIG, write_config


class Payload:
    """Unpickling this opens (creates) ``marker``: code run by a load."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


def plant(path: Path, marker: Path, wrap: bool = True) -> Path:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": Payload(marker), "epoch": 1} if wrap else Payload(marker), path)
    return path


def test_the_payload_runs_when_loaded_unsafely(tmp_path):
    """The payload is live: a full unpickle creates the marker (what every test below guards)."""
    import torch

    marker = tmp_path / "pwned"
    torch.load(plant(tmp_path / "p.pt", marker), weights_only=False)
    assert marker.exists()


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from retrieval.training.synthetic import write_dataset

    folder = tmp_path_factory.mktemp("shapes")
    write_dataset(folder, 16, seed=3, size=32)
    return folder


def _train_args(shapes: Path, tmp_path: Path) -> list[Any]:
    arch = tmp_path / "tiny.json"
    arch.write_text(json.dumps(TINY_CONFIG))
    return ["train", shapes, "--model", arch, "--from-scratch", "--epochs", "2",
            "--batch-size", "4", "--lr", "1e-3", "--workers", "0", "--val-fraction", "0.25"]


def test_train_resume_refuses_a_pickle_payload(shapes, tmp_path):
    """Issue 19.3: ``torch.load(..., weights_only=False)`` ran a planted checkpoint's code."""
    out, marker = tmp_path / "out", tmp_path / "pwned"
    ckpt = plant(out / "checkpoints" / "epoch_1.pt", marker)
    proc = run_cli(*_train_args(shapes, tmp_path), "--out", out, "--resume", check=False)
    line = assert_one_error_line(proc, str(ckpt), "not loaded")
    assert not marker.exists(), line
    assert ckpt.exists()  # left for its owner to look at


def test_train_resume_refuses_what_is_not_a_checkpoint(shapes, tmp_path):
    import torch

    out = tmp_path / "out"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "epoch_1.pt").write_bytes(b"PK\x03\x04 not a zip at all")
    proc = run_cli(*_train_args(shapes, tmp_path), "--out", out, "--resume", check=False)
    assert_one_error_line(proc, "epoch_1.pt", "not a readable training checkpoint")
    torch.save({"tensors": torch.zeros(2)}, out / "checkpoints" / "epoch_1.pt")
    proc = run_cli(*_train_args(shapes, tmp_path), "--out", out, "--resume", check=False)
    assert_one_error_line(proc, "epoch_1.pt", "not a training checkpoint")


def test_a_checkpoint_keeps_only_plain_types(shapes, tmp_path):
    """Every part of a checkpoint loads with weights_only=True, the generators' states too, and
    a checkpoint of the earlier layout (torch's generator state only) still resumes."""
    import torch

    from retrieval.training import TrainConfig, train

    cfg = dict(data=str(shapes), model=str(tmp_path / "tiny.json"), pretrained=None,
               from_scratch=True, batch_size=4, lr=1e-3, val_fraction=0.25, workers=0,
               early_stop=False)
    (tmp_path / "tiny.json").write_text(json.dumps(TINY_CONFIG))

    def interrupt(p: Any) -> None:
        if p.phase == "train" and p.epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(out=str(tmp_path / "a"), epochs=2, **cfg), progress=interrupt)
    path = tmp_path / "a" / "checkpoints" / "epoch_1.pt"
    state = torch.load(path, weights_only=True)
    assert set(state["rng"]) == {"torch", "cuda", "numpy", "python"}
    state["torch_rng"] = state.pop("rng")["torch"]  # as written before
    torch.save(state, path)
    resumed = train(TrainConfig(out=str(tmp_path / "a"), epochs=2, **cfg), resume=True)
    assert [e["epoch"] for e in resumed.epochs] == [1, 2]


def _register_tiny_architecture(tmp_path: Path) -> str:
    import open_clip

    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "retrieval-test-tiny.json").write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(folder)
    return "retrieval-test-tiny"


def test_pretrained_checkpoint_file_is_not_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = plant(tmp_path / "weights" / "open_clip_pytorch_model.bin", marker)
    make_images(tmp_path / "pics", 2)
    proc = run_cli("index", tmp_path / "pics", "--model", _register_tiny_architecture(tmp_path),
                   "--pretrained", ckpt, collection=tmp_path / "col", check=False)
    assert_one_error_line(proc, "could run as code")
    assert not marker.exists()


def test_local_dir_weights_are_not_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "model"
    plant(folder / "open_clip_pytorch_model.bin", marker, wrap=False)
    write_config(folder, TINY_CONFIG)
    make_images(tmp_path / "pics", 2)
    proc = run_cli("index", tmp_path / "pics", "--model", f"local-dir:{folder}",
                   collection=tmp_path / "col", check=False)
    assert_one_error_line(proc, "could run as code")
    assert not marker.exists()


def test_captioner_weights_are_not_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "coca"
    plant(folder / "open_clip_pytorch_model.bin", marker, wrap=False)
    write_config(folder, TINY_COCA_CONFIG)
    (image,) = make_images(tmp_path / "img", 1)
    proc = run_cli("caption", image, "--generate", "--captioner", f"local-dir:{folder}",
                   check=False)
    assert_one_error_line(proc, "could run as code")
    assert not marker.exists()
