"""A model's first ONNX export, made beside the index run that needs it.

Weights come as torch checkpoints, so the first index run of a model on a machine loads torch
whatever it does next. Rather than make that run wait for the export (tracing both towers,
writing them, the parity check: most of a first run's fixed cost), the run embeds with the
torch model it loaded while a thread exports it; the run waits for the thread at its end
(:func:`finish`), so the export is there for every later run and search, which then never
import torch.

The thread exports a deep copy of the model: the exporter traces and may patch the module it
is given, and the run's forward passes must never see that. Vectors do not depend on which
runtime made them beyond the parity the export checks (cosine >= 0.9999), and the identity
recorded with them is the weights', the same for both.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable

from .export_store import Export, ExportStore
from .openclip import OpenClipEncoder

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

    def wait(self) -> Export | None:
        self._thread.join()
        if self.error is not None:
            raise self.error
        return self.export


def start(encoder: OpenClipEncoder, identity: str, store: ExportStore) -> None:
    """Export ``encoder`` on a thread (one per model identity in this process)."""
    with _guard:
        if identity not in _running:
            _running[identity] = _Exporting(encoder, store)


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
        if on_event is not None and job._thread.is_alive():
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
