"""A model's first index run: torch embeds while the ONNX export is made beside the run; the
run ends with the export in place, and its vectors agree with the export's."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_images
from models import write_tiny_model

from retrieval import Collection, ModelSpec, load_encoder
from retrieval.encoders import first_export
from retrieval.encoders.export import encoder_identity
from retrieval.encoders.export_store import ExportStore
from retrieval.encoders.runtime import OnnxEncoder
from retrieval.ingest.report import IndexProgress


@pytest.fixture
def fresh_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A model no test exported before, and an empty export store."""
    monkeypatch.setenv("RETRIEVAL_EXPORTS", str(tmp_path / "exports"))
    return f"local-dir:{write_tiny_model(tmp_path / 'model', seed=7)}"


def test_first_run_embeds_with_torch_while_the_export_is_made(tmp_path: Path,
                                                               fresh_model: str) -> None:
    images = make_images(tmp_path / "imgs", 6)
    events: list[IndexProgress] = []
    col = Collection(tmp_path / "first", model=fresh_model)
    summary = col.index([tmp_path / "imgs"], workers=0, progress=events.append)
    assert summary.embedded == 6 and summary.failed == 0
    said = [e.detail for e in events if e.detail]
    assert any("beside this run" in m for m in said), said  # torch embedded meanwhile
    assert isinstance(col.encoder, OnnxEncoder)  # the run's torch model let go at its end
    assert not first_export.running()  # the run waited for its export
    export = ExportStore().by_identity(col.model_identity)
    assert export is not None and export.ok and "speed" not in export.manifest
    assert export.manifest["parity"]["image"]["min_cos"] >= 0.9999
    col.close()

    second = Collection(tmp_path / "second", model=fresh_model)
    second.index([tmp_path / "imgs"], workers=0)  # the export serves: no torch model loaded
    assert isinstance(second.encoder, OnnxEncoder)
    first = Collection(tmp_path / "first")  # searches on the export, vectors from torch
    for p in images:
        assert first.search(image=p, k=1)[0].path == str(p)
    for query in ("a shape", "a red square", "blue"):
        assert ([h.path for h in first.search(query, k=6)]
                == [h.path for h in second.search(query, k=6)])


def test_int8_first_run_exports_before_it_embeds(tmp_path: Path, fresh_model: str) -> None:
    make_images(tmp_path / "imgs", 3)
    col = Collection(tmp_path / "c", model=fresh_model, precision="int8")
    col.index([tmp_path / "imgs"], workers=0)
    assert isinstance(col.encoder, OnnxEncoder) and col.encoder.precision == "int8"


def test_the_run_embeds_with_the_export_once_it_is_written(fresh_model: str) -> None:
    """A long first run does not stay on torch: the export serves from the batch after it is
    written, with vectors that agree with torch's within the export's parity."""
    encoder = load_encoder(ModelSpec.parse(fresh_model), "cpu")
    handover = first_export.start(encoder, encoder_identity(encoder), ExportStore())
    first_export.finish()
    pixels = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    got = handover.embed_images(pixels)
    assert isinstance(handover._current(), OnnxEncoder)
    np.testing.assert_allclose(got, encoder.embed_images(pixels), atol=1e-4)
    np.testing.assert_allclose(handover.embed_texts(["a red square"]),
                               encoder.embed_texts(["a red square"]), atol=1e-4)


def test_the_exporters_quiet_silences_only_its_own_thread(capsys: pytest.CaptureFixture[str],
                                                          caplog: pytest.LogCaptureFixture,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """The export beside a run used to swap sys.stdout/sys.stderr, raise the root logger's
    level and enter catch_warnings: process-wide, so the run's own output (the CLI's line on
    Ctrl-C, its warnings about bad files) vanished while an export was under way."""
    import logging
    import threading
    import warnings

    from torch.jit import TracerWarning

    from retrieval.encoders.quiet import quiet

    # The "retrieval" logger as it is before any CLI run: an in-process CLI run earlier in the
    # suite gives it a stderr handler and stops it propagating (once per process).
    monkeypatch.setattr(logging.getLogger("retrieval"), "handlers", [])
    monkeypatch.setattr(logging.getLogger("retrieval"), "propagate", True)
    inside, release = threading.Event(), threading.Event()

    def exporter() -> None:
        with quiet():
            logging.getLogger().warning("quantiser chatter")  # dropped: this thread is quiet
            logging.getLogger("onnxscript.optimizer").warning("optimizer chatter")
            warnings.warn("tracer chatter", TracerWarning, stacklevel=1)
            inside.set()
            release.wait(30)

    thread = threading.Thread(target=exporter)
    with warnings.catch_warnings(record=True) as caught:
        thread.start()
        assert inside.wait(30)
        try:  # the exporter is inside quiet() on its thread; this thread is not
            print("the run's summary")
            print("the run's error line", file=sys.stderr)
            with caplog.at_level(logging.WARNING):
                logging.getLogger().warning("the app's warning")
                logging.getLogger("retrieval.ingest").warning("a bad file")
            warnings.warn("the app's own warning", UserWarning, stacklevel=1)
        finally:
            release.set()
            thread.join()
    out, err = capsys.readouterr()
    assert out == "the run's summary\n" and err == "the run's error line\n"
    assert [r.getMessage() for r in caplog.records] == ["the app's warning", "a bad file"]
    assert [str(w.message) for w in caught] == ["the app's own warning"]
    assert logging.getLogger("onnxscript").level == logging.NOTSET  # put back after
