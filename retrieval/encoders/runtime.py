"""Embedding with an exported model on ONNX Runtime: no torch, no open_clip.

Each tower is an inference session created on first use, so a text query never loads the image
tower. The weights are external data files that ONNX Runtime memory-maps, which keeps creating
a session several times faster than for a model whose weights are embedded in the graph and
must be parsed and copied (``benchmarks/cold_query.py`` times a one-shot search).

Text towers whose attention is causal and that pool at the end token, and Hugging Face text
towers that mask their padding and pool by mean or at the first token, are exported with a
dynamic sequence length: positions after the end token cannot change the output, so token ids
are cut after the longest text's end token instead of being padded to the context length (a
short query costs a fraction of a full 77-token forward pass).

Before a tower's session is created, the files it reads are checked against the export's
checksums (see :mod:`.integrity`); a file that fails, or that ONNX Runtime cannot load, is
:class:`~.integrity.ExportDamaged`. An encoder given ``on_damage`` then embeds with the encoder
that callback returns (torch) instead of failing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

from .export_store import Export
from .integrity import ExportDamaged, check_files
from .spec import Encoder, ModelSpec
from .tokenizer import load_tokenizer

TEXT_BATCH = 64


def cpu_threads() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def create_session(path: str, threads: int | None = None, prepack: bool = True) -> Any:
    """An ONNX Runtime CPU session with one intra-op pool of ``threads`` threads.

    ``prepack=False`` skips re-laying out the weight matrices for the matrix-multiply kernels:
    the session starts several times faster and each query runs somewhat slower, the right
    trade for one search per process (``benchmarks/cold_query.py``)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or cpu_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # warnings about unused initialisers are noise to users
    if not prepack:
        options.add_session_config_entry("session.disable_prepacking", "1")
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:200] + "...") if len(text) > 200 else text or type(exc).__name__


class OnnxEncoder:
    """An exported model (one precision variant) on ONNX Runtime's CPU provider.

    ``check``: how a tower's files are checked before its session is created (``stat``: hashed
    when their stat changed since they were last verified; ``full``: always hashed; ``off``:
    not at all, for an export being written). ``on_damage``: called once with the damage when
    a tower is damaged; the encoder it returns embeds from then on (else the damage is
    raised)."""

    def __init__(self, export: Export, precision: str = "fp32", threads: int | None = None,
                 prepack: bool = True, *, check: Literal["stat", "full", "off"] = "stat",
                 on_damage: Callable[[ExportDamaged], Encoder] | None = None) -> None:
        if not export.has(precision):
            raise ValueError(f"export {export.folder} has no {precision} variant")
        self.export = export
        self.precision = precision
        self.spec: ModelSpec = export.spec
        self.identity = export.identity
        self.dim = export.dim
        self.image_spec = export.image_spec
        self.logit_scale = export.logit_scale
        self._threads = threads
        self._prepack = prepack
        self._text_cfg: dict[str, Any] = export.manifest["text"]
        self._sessions: dict[str, Any] = {}
        self._tokenizer: Any = None
        self._lock = threading.RLock()
        self._check = check
        self._on_damage = on_damage
        self.fallback: Encoder | None = None  # what embeds instead of a damaged export

    def __repr__(self) -> str:
        return f"OnnxEncoder({str(self.spec)!r}, {self.precision}, {self.export.folder.name})"

    def _session(self, tower: str) -> Any:
        """The tower's session; None when the export is damaged and ``fallback`` embeds."""
        session = self._sessions.get(tower)
        if session is None and self.fallback is None:
            with self._lock:
                session = self._sessions.get(tower)
                if session is None and self.fallback is None:
                    try:
                        session = self._sessions[tower] = self._open(tower)
                    except ExportDamaged as damage:
                        if self._on_damage is None:
                            raise
                        self.fallback = self._on_damage(damage)
        return session

    def _open(self, tower: str) -> Any:
        """A session for ``tower`` once its files are checked (the tokenizer's too)."""
        if self._check != "off":
            check_files(self.export, self.export.tower_names(tower, self.precision),
                        full=self._check == "full")
        path = self.export.tower_file(tower, self.precision)
        try:
            session = create_session(str(path), self._threads, self._prepack)
        except Exception as exc:  # onnxruntime's own errors: a protobuf, graph or data fault
            raise ExportDamaged(self.export, path.name, "cannot be loaded by ONNX Runtime "
                                f"({_first_line(exc)})") from None
        if tower == "text":
            self._load_tokenizer()
        return session

    def _load_tokenizer(self) -> Any:
        if self._tokenizer is None:
            with self._lock:
                if self._tokenizer is None:
                    cfg = self._text_cfg["tokenizer"]
                    try:
                        self._tokenizer = load_tokenizer(self.export.folder, cfg)
                    except Exception as exc:  # a gzip, UTF-8, JSON or tokenizers error
                        name = cfg.get("merges") or cfg.get("file") or "tokenizer"
                        raise ExportDamaged(self.export, name, "cannot be read as a tokenizer "
                                            f"({_first_line(exc)})") from None
        return self._tokenizer

    def warm(self, *towers: str) -> None:
        """Create the sessions of these towers now (a server does, before its first request)."""
        for tower in towers or ("image", "text"):
            self._session(tower)
        if self.fallback is not None:
            self.fallback.warm(*towers)

    def tokenize(self, texts: Sequence[str]) -> np.ndarray:
        """Token ids as the text tower takes them (cut after the last end token if it can)."""
        tokens = self._load_tokenizer()(list(texts))
        if self._text_cfg.get("trim") and len(tokens):
            # Cut after the last id that is not padding (every text ends with its end token);
            # keep at least the two positions the export allows.
            pad = int(self._text_cfg["tokenizer"].get("pad_id", 0))
            used = (tokens != pad).any(axis=0)
            length = max(2, int(used.nonzero()[0].max()) + 1 if used.any() else 0)
            tokens = np.ascontiguousarray(tokens[:, :length])
        return tokens

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        session = self._session("text")
        if session is None:
            return self.fallback.embed_texts(texts)  # type: ignore[union-attr]
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        # Similar lengths batched together waste less on padding.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), TEXT_BATCH):
            rows = order[start:start + TEXT_BATCH]
            tokens = self.tokenize([texts[i] for i in rows])
            out[rows] = session.run(None, {session.get_inputs()[0].name: tokens})[0]
        return _renormalize(out)

    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        if len(pixels) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        session = self._session("image")
        if session is None:
            return self.fallback.embed_images(pixels)  # type: ignore[union-attr]
        x = np.ascontiguousarray(pixels, dtype=np.uint8)
        return _renormalize(session.run(None, {session.get_inputs()[0].name: x})[0])


def _renormalize(x: np.ndarray) -> np.ndarray:
    """Exact unit length in float32 (the graph normalises too; this absorbs rounding)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.maximum(norms, 1e-12, out=norms)
    return x / norms
