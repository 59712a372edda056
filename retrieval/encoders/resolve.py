"""Which runtime embeds for whom: ONNX Runtime where it serves, torch where it must.

The choice, with its reason, is :data:`RUNTIMES` (the first whose condition holds); the rest
of this module gathers what the choice depends on (:class:`Need`) and builds the encoder.

* Searches (and other one-shot reads) use the collection's ONNX export on the CPU and never
  import torch. Only ``device="cuda..."`` asked for by name loads torch for a search. A
  collection without an export (made before exports existed) searches with torch and says once
  how to make that fast.
* Indexing uses CUDA through torch when the machine has it (``device="auto"``). On the CPU it
  uses the model's ONNX export (its int8 variant on request). The first index run of a model
  on a machine embeds with the torch model it had to load anyway while the export is made
  beside it (:mod:`.first_export`); an int8 run, which needs the export's files, exports first.
  No speed test decides between the runtimes: one measured at export time (a few batches) was
  noise on a busy machine, and chose torch, whose import every later run then paid.
* A model identity recorded by a collection is checked wherever the weights are read: weights
  that changed under a collection are refused instead of mixing incompatible vectors.
* An export whose files are damaged (see :mod:`.integrity`) never embeds: a search goes on with
  torch after one warning naming the file and the command that rebuilds the export; an index
  run exports the model again first (its files are hashed in full, as the vectors it makes are
  stored).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace

from ..errors import InputError, ModelMismatchError
from .export_store import PRECISIONS, Export, ExportStore
from .integrity import ExportDamaged, intact
from .openclip import OpenClipEncoder, load_encoder
from .runtime import OnnxEncoder
from .spec import Encoder, ModelSpec

REPAIR = "retrieval model export --force"

log = logging.getLogger("retrieval")
_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning("%s", message)


def cuda_present() -> bool:
    """Whether this machine may have a CUDA (or ROCm) GPU, checked without importing torch
    where the answer is plainly no (Linux without NVIDIA or AMD GPU device files)."""
    if sys.platform.startswith("linux") and not any(
            os.path.exists(p) for p in ("/proc/driver/nvidia/version", "/dev/nvidiactl",
                                        "/dev/kfd")):
        return False
    import torch

    return bool(torch.cuda.is_available())


def wants_cuda(device: str | None) -> bool:
    """``cuda...`` by name, or ``auto`` on a machine that has a GPU."""
    if device in (None, "", "auto"):
        return cuda_present()
    return device.startswith("cuda")


@dataclass(frozen=True)
class Need:
    """What the choice of runtime depends on."""

    indexing: bool  # many images and texts (else: searches, one-shot reads)
    cuda: bool  # CUDA asked for (by name; for indexing, also ``auto`` on a machine with a GPU)
    export: Export | None  # the usable ONNX export, if any
    precision: str
    exporting: bool = False  # the model's first export is being made beside this run


@dataclass(frozen=True)
class Runtime:
    """A way of running a model, the condition under which it is chosen, and why."""

    name: str  # "torch-cuda", "torch" (CPU, or the device asked for), "onnx" (CPU)
    when: Callable[[Need], bool]
    reason: str


# In order: the first whose condition holds serves. A new runtime is one entry here and one
# encoder class that follows the :class:`~.spec.Encoder` protocol.
RUNTIMES: tuple[Runtime, ...] = (
    Runtime("torch-cuda", lambda need: need.cuda,
            "CUDA asked for (for indexing, also 'auto' on a machine with a GPU)"),
    Runtime("torch", lambda need: need.exporting,
            "the model's first ONNX export is being made beside this index run; the torch model "
            "loaded for it embeds meanwhile"),
    Runtime("onnx", lambda need: need.export is not None,
            "the model's ONNX export on the CPU: no torch import, a fast start"),
    Runtime("torch", lambda need: True, "the model has no usable ONNX export here"),
)


def choose(need: Need) -> Runtime:
    """The runtime that serves ``need``, with its reason."""
    runtime = next(r for r in RUNTIMES if r.when(need))
    log.debug("runtime %s: %s", runtime.name, runtime.reason)
    return runtime


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    return precision


def _mismatch(spec: ModelSpec, bound: str, found: str) -> ModelMismatchError:
    return ModelMismatchError(
        f"the weights of model {spec} changed since this collection was indexed (model identity "
        f"{bound[:12]}..., now {found[:12]}...); its vectors would no longer match. Restore the "
        "weights, or index into a new collection")


def check_identity(encoder: OpenClipEncoder, identity: str | None) -> str:
    """The identity of a loaded model, which must be ``identity`` when one is recorded."""
    from .export import encoder_identity

    found = encoder_identity(encoder)
    if identity is not None and found != identity:
        raise _mismatch(encoder.spec, identity, found)
    return found


def torch_instead(spec: ModelSpec, identity: str | None, repair: str = REPAIR
                  ) -> Callable[[ExportDamaged], Encoder]:
    """What a search does with a damaged export: one warning, then torch on the CPU."""
    def load(damage: ExportDamaged) -> Encoder:
        _warn_once(f"damaged:{damage.folder}", f"{damage}; searching with torch (slower) until "
                                               f"`{repair}` rebuilds the export")
        encoder = load_encoder(spec, "cpu")
        if identity is not None:
            check_identity(encoder, identity)
        return encoder
    return load


def search_export(spec: ModelSpec, identity: str | None, precision: str,
                  store: ExportStore) -> Export | None:
    """The export a search on the CPU uses, if any."""
    if identity is not None:
        return store.by_identity(identity, precision) or store.by_identity(identity)
    export = store.for_spec(spec)  # made before exports existed: the same files serve as well
    return export if export is not None and export.ok else None


def text_cache_key(spec: ModelSpec, identity: str, precision: str, device: str | None = "auto",
                   store: ExportStore | None = None) -> str:
    """The key of a collection's query-text vectors in the text cache: the identity, the
    precision, and the export's text tower (its checksums and when it was made), so a rebuilt
    export never meets vectors from before. A damaged export's searches fall back to torch,
    whose vectors are right for the identity, so they are kept under the same key."""
    key = f"{identity}:{precision}"
    need = _search_need(spec, identity, precision, device, store or ExportStore())
    if need.export is None or choose(need).name != "onnx":
        return f"{key}:torch"
    export = need.export
    return f"{key}:{export.text_key(precision if export.has(precision) else 'fp32')}"


def _search_need(spec: ModelSpec, identity: str | None, precision: str, device: str | None,
                 store: ExportStore) -> Need:
    """What the runtime of a search depends on: CUDA only when asked for by name."""
    cuda = device is not None and device.startswith("cuda")
    export = None if cuda else search_export(spec, identity, precision, store)
    return Need(indexing=False, cuda=cuda, export=export, precision=precision)


def for_search(spec: ModelSpec, *, identity: str | None, precision: str = "fp32",
               device: str | None = "auto", store: ExportStore | None = None,
               hint: str = "", warn: bool = True, one_shot: bool = False,
               threads: int | None = None, repair: str = REPAIR) -> Encoder:
    """The encoder for searches of a collection bound to ``spec`` (and ``identity``);
    ``one_shot`` trades per-query speed for a faster start (one search per process);
    ``threads`` bounds the threads of one encoding (ONNX Runtime; default: every core);
    ``repair`` is the command a warning about a damaged export names."""
    need = _search_need(spec, identity, precision, device, store or ExportStore())
    export = need.export
    if choose(need).name == "onnx" and export is not None:
        return OnnxEncoder(export, precision if export.has(precision) else "fp32",
                           threads=threads, prepack=not one_shot,
                           on_damage=torch_instead(spec, identity, repair))
    if warn and not need.cuda:
        _warn_once(f"no-export:{spec}:{identity}", (
            f"model {spec} has no ONNX export here, so searches load torch (several "
            "seconds). " + (hint or "Run `retrieval model export` once to make them fast.")))
    encoder = load_encoder(spec, device)
    if identity is not None:
        check_identity(encoder, identity)
    return encoder


def for_indexing(spec: ModelSpec, *, identity: str | None, precision: str = "fp32",
                 device: str | None = "auto", store: ExportStore | None = None,
                 on_event: Callable[[str], None] | None = None,
                 beside: bool = False) -> tuple[Encoder, str]:
    """The encoder for embedding many images and texts, and the model identity it has.

    Exports the model when it has no export yet (once per model and machine); ``beside``: on
    a thread while the caller embeds with torch, the caller then waits for it with
    :func:`.first_export.finish`."""
    check_precision(precision)
    store = store or ExportStore()
    need = Need(indexing=True, cuda=wants_cuda(device), export=None, precision=precision)
    if choose(need).name == "torch-cuda":
        return _on_cuda(spec, identity, precision, device, store, on_event)
    export, encoder, found = _cpu_export(spec, identity, precision, store, on_event, beside)
    usable = export if export is not None and export.ok else None
    runtime = choose(replace(need, export=usable, exporting=export is None))
    if runtime.name == "onnx" and usable is not None:
        return _indexing_onnx(usable, precision, store, on_event), found
    if export is not None and not export.ok:
        if precision != "fp32":
            raise InputError(f"{precision} precision needs an ONNX export, and model {spec} "
                             f"has none: {export.reason}")
        _warn_once(f"failed:{found}", f"model {spec} runs on torch: {export.reason}")
    return encoder or load_encoder(spec, "cpu"), found


def _on_cuda(spec: ModelSpec, identity: str | None, precision: str, device: str | None,
             store: ExportStore, on_event: Callable[[str], None] | None
             ) -> tuple[Encoder, str]:
    """torch on CUDA for an index run, the model exported on the way for its searches."""
    from .export import export_model

    if precision != "fp32":
        raise InputError("int8 precision is for indexing on the CPU; on CUDA the model "
                         "runs in float16 (use --device cpu for int8)")
    encoder = load_encoder(spec, device)
    found = check_identity(encoder, identity)
    export_model(encoder, store=store, on_event=on_event)  # for this model's searches
    return encoder, found


def _cpu_export(spec: ModelSpec, identity: str | None, precision: str, store: ExportStore,
                on_event: Callable[[str], None] | None, beside: bool = False
                ) -> tuple[Export | None, Encoder | None, str]:
    """The export an index run on the CPU works with (made, made again when damaged, or
    quantised first, where needed; possibly a failed one; None while a first export is made
    ``beside`` the run), the torch encoder loaded on the way (if any), and the model
    identity."""
    from .export import export_model, quantize_export

    export = store.for_spec(spec)
    damaged = False
    if export is not None and export.ok:
        if identity is not None and export.identity != identity:
            raise _mismatch(spec, identity, export.identity)
        damaged = not _intact(export, precision)
        if not damaged:
            if precision != "fp32" and not export.has(precision):
                with store.lock(export.identity):
                    if on_event:
                        on_event(f"quantising {spec} to {precision}")
                    export = quantize_export(store, export)
            return export, None, export.identity
    encoder = load_encoder(spec, "cpu")
    found = check_identity(encoder, identity)
    if export is None and beside and precision == "fp32":
        from . import first_export

        if on_event:
            on_event(f"exporting {spec} to ONNX beside this run (once per model)")
        return None, first_export.start(encoder, found, store), found
    if export is None or damaged:
        export = export_model(encoder, store=store, int8=precision == "int8", force=damaged,
                              on_event=on_event)
    return export, encoder, found


def _intact(export: Export, precision: str) -> bool:
    """Whether the towers an index run loads pass the cheap check (stat, else hash); a damaged
    export is made again before the run starts."""
    variant = precision if export.has(precision) else "fp32"
    return intact(export, [n for tower in ("image", "text")
                           for n in export.tower_names(tower, variant)])


def _indexing_onnx(export: Export, precision: str, store: ExportStore,
                   on_event: Callable[[str], None] | None) -> OnnxEncoder:
    """An index run's ONNX encoder: each tower hashed in full when first loaded (its vectors
    are stored); one damaged meanwhile makes the export again and embeds with the new one."""
    def rebuilt(damage: ExportDamaged) -> Encoder:
        from .export import export_model

        log.warning("%s; exporting it again", damage)
        encoder = load_encoder(export.spec, "cpu")
        check_identity(encoder, export.identity)
        new = export_model(encoder, store=store, int8=precision == "int8", force=True,
                           on_event=on_event)
        return OnnxEncoder(new, precision) if new.ok else encoder

    return OnnxEncoder(export, precision, check="full", on_damage=rebuilt)
