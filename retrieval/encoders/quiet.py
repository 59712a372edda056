"""Keeping torch's ONNX exporter and ONNX Runtime's quantiser quiet without silencing anything
else in the process.

A model's first export runs on a thread beside the index run that needs it
(:mod:`.first_export`). Swapping ``sys.stdout``/``sys.stderr``, raising the root logger's
level or entering ``warnings.catch_warnings`` there would change them for the whole process
while the export runs: the run's own warnings, its progress, and the CLI's one line on Ctrl-C
were lost while an export was under way. So the quiet here is targeted:

* the exporter's progress lines are turned off at the source (``verbose=False``);
* the loggers of the exporter's packages are raised to ERROR while any export is quiet, and
  put back when the last one ends (they log nothing else a user could want);
* records logged on the root logger (ONNX Runtime's quantiser does) are dropped only when they
  come from a thread that is inside :func:`quiet`;
* warnings only the exporter raises (tracer warnings, and the ones attributed to the
  exporter's modules or to :mod:`.export` itself) are ignored by filters that stay.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from collections.abc import Iterator

EXPORTER_LOGGERS = ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnxscript",
                    "onnx_ir", "onnx")
_EXPORTER_MODULES = r"(torch\.onnx|torch\.export|torch\._dynamo|torch\.fx|torch\.jit|onnxscript" \
                    r"|onnx_ir|onnx|onnxruntime\.quantization|retrieval\.encoders\.export)(\.|$)"

_lock = threading.Lock()
_quiet_threads: dict[int, int] = {}  # thread -> how deep in quiet() it is
_saved_levels: dict[str, int] = {}


class _FromQuietThreads(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread not in _quiet_threads


_root_filter = _FromQuietThreads()


def _add_warning_filters() -> None:
    """Added on every entry: an identical filter is moved to the front rather than repeated,
    and a caller's ``catch_warnings`` that ended since may have dropped the earlier ones."""
    warnings.filterwarnings("ignore", module=_EXPORTER_MODULES)
    with contextlib.suppress(ImportError):  # quantising needs ONNX Runtime only, not torch
        from torch.jit import TracerWarning

        warnings.filterwarnings("ignore", category=TracerWarning)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the exporter and the quantiser for the duration, on this thread's behalf only."""
    me = threading.get_ident()
    with _lock:
        _add_warning_filters()
        if not _quiet_threads:
            for name in EXPORTER_LOGGERS:
                log = logging.getLogger(name)
                _saved_levels[name] = log.level
                log.setLevel(logging.ERROR)
            logging.getLogger().addFilter(_root_filter)
        _quiet_threads[me] = _quiet_threads.get(me, 0) + 1
    try:
        yield
    finally:
        with _lock:
            _quiet_threads[me] -= 1
            if not _quiet_threads[me]:
                del _quiet_threads[me]
            if not _quiet_threads:
                logging.getLogger().removeFilter(_root_filter)
                for name, level in _saved_levels.items():
                    logging.getLogger(name).setLevel(level)
                _saved_levels.clear()
