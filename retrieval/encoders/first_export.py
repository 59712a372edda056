"""A model's first ONNX export, made beside the index run that needs it.

Weights come as torch checkpoints, so the first index run of a model on a machine loads torch
whatever it does next. Rather than make that run wait for the export (tracing both towers,
writing them, the parity check: most of a first run's fixed cost), the run embeds with the
torch model it loaded while a thread exports it, and with the export once it is written
(:class:`Handover`); the run waits for the thread at its end (:func:`finish`), so the export
is there for every later run and search, which then never import torch.

The thread exports a deep copy of the model: the exporter traces and may patch the module it
is given, and the run's forward passes must never see that. Vectors do not depend on which
runtime made them beyond the parity the export checks (cosine >= 0.9999), and the identity
recorded with them is the weights', the same for both.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Sequence

import numpy as np

from .export_store import Export, ExportStore
from .openclip import OpenClipEncoder
from .spec import Encoder

_running: dict[str, _Exporting] = {}
_guard = threading.Lock()


class _Exporting:
    """One export on its thread, and what it came to."""

    def __init__(self, encoder: OpenClipEncoder, store: ExportStore) -> None:
        twin = copy.copy(encoder)
        twin._model = copy.deepcopy(encoder.model)  # traced apart from the model that embeds
        self.spec = encoder.spec
        self.export: Export | None = None
        self.error: BaseException | None = None
        self._twin, self._store = twin, store
        self._thread = threading.Thread(target=self._run, name=f"export {encoder.spec}")
        self._thread.start()

    def _run(self) -> None:
        from .export import export_model

        try:
            self.export = export_model(self._twin, store=self._store)
        except BaseException as exc:  # handed to the run that waits for it
            self.error = exc
        finally:
            del self._twin  # the copy's memory goes back as soon as the export is written

    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self) -> Export | None:
        self._thread.join()
        if self.error is not None:
            raise self.error
        return self.export


class Handover:
    """The encoder of a model's first index run: torch until the export made beside the run is
    written (and has passed its parity check), the export from the next batch on. On the CPU
    the export embeds faster than torch (``benchmarks/embed_throughput.py``: its ``default``
    row against its ``torch`` row), so a long first run does not stay on torch; the vectors
    of the two agree within the parity the export checks."""

    def __init__(self, torch_encoder: OpenClipEncoder, job: _Exporting) -> None:
        self._torch, self._job = torch_encoder, job
        self._after: Encoder | None = None  # what embeds once the export thread has ended
        self.spec, self.dim = torch_encoder.spec, torch_encoder.dim
        self.image_spec, self.logit_scale = torch_encoder.image_spec, torch_encoder.logit_scale

    def _current(self) -> Encoder:
        if self._after is None and self._job.done():
            export = self._job.export
            if self._job.error is None and export is not None and export.ok:
                from .runtime import OnnxEncoder

                self._after = OnnxEncoder(export, "fp32")
            else:
                self._after = self._torch  # a failed export: the run stays on torch
        return self._after or self._torch

    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        return self._current().embed_images(pixels)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self._current().embed_texts(texts)

    def warm(self, *towers: str) -> None:
        self._current().warm(*towers)


def start(encoder: OpenClipEncoder, identity: str, store: ExportStore) -> Handover:
    """Export ``encoder`` on a thread (one per model identity in this process); the encoder
    that embeds with it until the export is there, then with the export."""
    with _guard:
        if identity not in _running:
            _running[identity] = _Exporting(encoder, store)
        return Handover(encoder, _running[identity])


def running() -> bool:
    return bool(_running)


def finish(on_event: Callable[[str], None] | None = None) -> list[Export]:
    """Wait for the exports this process started; the first error any of them met is raised
    once all have ended (a failed export is no error: it is recorded, and the model stays on
    torch)."""
    with _guard:
        pending = list(_running.items())
    done: list[Export] = []
    error: BaseException | None = None
    for identity, job in pending:
        if on_event is not None and not job.done():
            on_event(f"finishing the ONNX export of {job.spec} (once per model)")
        try:
            export = job.wait()
            if export is not None:
                done.append(export)
        except BaseException as exc:
            error = error or exc
        finally:
            with _guard:
                _running.pop(identity, None)
    if error is not None:
        raise error
    return done
