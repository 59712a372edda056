"""Decoding and embedding on a Ray cluster (``retrieval index --ray``), for :mod:`.images`.

The driver (the process that runs the index) scans, diffs against the catalog, reuses stored
vectors and commits, exactly as a local run does; only the source of decoded and embedded
results changes. A Ray Data pipeline over the files to do:

* decode tasks (CPU) hash, validate and preprocess each file with the local run's own
  :func:`~.workers.decode_file`, skipping pixels for content the catalog already holds (the
  driver ships a compact set of the known hashes, as a local run gives its decode workers);
* an actor pool embeds: each actor builds the collection's encoder the way the local run builds
  it (from the model spec, checked against the recorded model identity; ONNX Runtime or torch
  as this machine's export chose, CUDA where the node has a GPU). An encoder handed to the
  collection as an object, rather than named, travels to the actors pickled;
* results stream back to the driver, in any order, as rows of one file each; the driver
  commits them a batch at a time, so an interrupted run resumes like a local one.

Ray retries a task or restarts an actor that dies; side effects happen on the driver only, and
the driver ignores a file it already received, so a retried worker loses or duplicates nothing.
Failures to decode a file come back as rows with a reason, as in a local run. A decode task
that keeps dying (a file that crashes the decoder) is given up after a few tries, and the files
the cluster did not return go through the local decode pool, which isolates such a file and
reports it as failed.

The files must be readable at the same paths on every node (one machine, or a shared file
system), and each node needs the model where the driver has it (its weights or Hugging Face
cache); the ``RETRIEVAL_*`` and ``HF_*`` settings of the driver travel with the job. Ray is an
optional dependency, imported only here and only when asked for.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
import warnings
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import IndexingError, InputError
from .workers import CHUNK, WORKER_NICENESS, DecodeResult, DecodeTask, decode_file, init_worker

if TYPE_CHECKING:
    from ..encoders import Encoder, ModelSpec
    from ..media import ImageSpec
    from ..storage import Catalog

INSTALL_HINT = ("Ray is not installed; install the extra: pip install 'retrieval[ray]' "
                "(pip install -e '.[ray]' in a checkout)")
FORWARDED_ENV = ("RETRIEVAL_HOME", "RETRIEVAL_EXPORTS", "HF_HOME", "HF_HUB_OFFLINE",
                 "HF_HUB_CACHE", "XDG_CACHE_HOME")
MAX_BLOCKS = 100_000
CONNECT_TIMEOUT_S = 10
DECODE_TRIES = 3  # retries of a decode task whose worker died (a lost node, a decoder crash)


def require_ray() -> Any:
    """The ``ray`` module with Ray Data, or :class:`InputError` saying how to get it."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise InputError(INSTALL_HINT) from None
    return ray


def check_ray(address: str) -> None:
    """Before a run starts: Ray is installed, and an address to join answers."""
    ray = require_ray()
    if address != "auto" and not ray.is_initialized():
        _check_reachable(address)


@dataclass(frozen=True)
class EncoderRecipe:
    """How an actor gets the collection's encoder: rebuilt from the spec and identity, or (an
    encoder the collection was handed) the object itself."""

    spec: ModelSpec
    identity: str | None
    precision: str = "fp32"
    device: str = "auto"
    encoder: Any = None

    @classmethod
    def of(cls, catalog: Catalog, encoder: Encoder) -> EncoderRecipe:
        settings = catalog.get_settings()
        identity = settings.get("model_identity")
        precision = str(settings.get("precision") or "fp32")
        # An index run records the identity before its first file unless the encoder was
        # passed in ready-made; such an encoder cannot be rebuilt from a name, so it travels.
        return cls(encoder.spec, identity, precision,
                   encoder=None if identity else encoder)

    def build(self) -> Encoder:
        if self.encoder is not None:
            return self.encoder
        from ..encoders.resolve import for_indexing

        encoder, _ = for_indexing(self.spec, identity=self.identity, precision=self.precision,
                                  device=self.device)
        return encoder


# -- what runs on the cluster --------------------------------------------------------------------

_known_prefixes: dict[str, np.ndarray] = {}


def _prefix_set(known: Any) -> np.ndarray:
    import ray

    if not isinstance(known, ray.ObjectRef):
        return np.asarray(known, dtype=np.uint64)
    key = known.hex()
    if key not in _known_prefixes:
        _known_prefixes.clear()
        _known_prefixes[key] = ray.get(known)
    return _known_prefixes[key]


def decode_batch(batch: dict[str, np.ndarray], spec: ImageSpec, max_pixels: int,
                 known: Any) -> dict[str, np.ndarray]:
    """Decode task: a batch of pickled :class:`DecodeTask` rows in, rows of a pickled
    :class:`DecodeResult` (without pixels) plus a pixel column out. ``known`` is a reference
    to the content the catalog holds (:meth:`~retrieval.storage.Catalog.content_prefixes`)."""
    _lower_priority()
    return decode_rows(batch, spec, max_pixels, _prefix_set(known))


def decode_rows(batch: dict[str, np.ndarray], spec: ImageSpec, max_pixels: int,
                prefixes: np.ndarray) -> dict[str, np.ndarray]:
    """What a decode task returns, in this process."""

    init_worker(spec, max_pixels, prefixes)
    results = [decode_file(pickle.loads(t)) for t in batch["task"]]
    h, w = spec.size
    pixels = np.zeros((len(results), h, w, 3), dtype=np.uint8)
    has = np.zeros(len(results), dtype=bool)
    for i, res in enumerate(results):
        if res.pixels is not None:
            pixels[i], has[i] = res.pixels, True
            res.pixels = None
    return {"result": _pickled(results), "pixels": pixels, "has_pixels": has}


_niced = False


def _lower_priority() -> None:
    """Decode tasks yield the cores to the model's threads, as the local decode workers do."""
    global _niced
    if not _niced:
        _niced = True
        with contextlib.suppress(AttributeError, OSError):
            os.nice(WORKER_NICENESS)


def _pickled(results: Sequence[DecodeResult]) -> np.ndarray:
    out = np.empty(len(results), dtype=object)
    out[:] = [pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL) for r in results]
    return out


class Embedder:
    """The actor that holds the encoder and embeds the decoded pixels of each batch."""

    def __init__(self, recipe: EncoderRecipe) -> None:
        self.encoder = recipe.build()
        if type(self.encoder).__name__ == "OpenClipEncoder" and not str(
                getattr(self.encoder, "device", "cpu")).startswith("cuda"):
            import torch  # Ray limits a worker to OMP_NUM_THREADS=1; the model takes the cores

            from ..encoders.runtime import cpu_threads

            torch.set_num_threads(cpu_threads())

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        has = np.asarray(batch["has_pixels"], dtype=bool)
        vectors = np.zeros((len(has), self.encoder.dim), dtype=np.float32)
        if has.any():
            vectors[has] = self.encoder.embed_images(np.ascontiguousarray(batch["pixels"][has]))
        return {"result": batch["result"], "vector": vectors, "has_vector": has}


# -- the driver's side -----------------------------------------------------------------------


def connect(address: str) -> bool:
    """Join the cluster at ``address`` ("auto": ``RAY_ADDRESS``, a cluster started on this
    machine, else a new local one); True when this call started the connection."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    import logging

    if address != "auto":
        _check_reachable(address)
    try:
        ray.init(address=None if address == "auto" else address, log_to_driver=False,
                 logging_level=logging.WARNING, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = "" if address == "auto" else f" at {address}"
        raise IndexingError(f"cannot connect to the Ray cluster{where}: {exc}") from None
    return True


def _check_reachable(address: str) -> None:
    """A cluster address that does not answer fails at once (``ray.init`` would retry for
    minutes)."""
    import socket

    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return  # ray://, or a form Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise IndexingError(f"cannot reach the Ray cluster at {address} "
                            f"({exc.strerror or exc})") from None


def _pool(ray: Any) -> tuple[int, dict[str, Any]]:
    """Actors and each one's resources: one per GPU where the cluster has GPUs, else one per
    node. A CPU actor reserves half the smallest node's cores, so that no two share a node and
    decode tasks keep the other half; its threads use every core (decode tasks run niced)."""
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus:
        return gpus, {"num_gpus": 1}
    cpus = [n["Resources"]["CPU"] for n in ray.nodes()
            if n.get("Alive") and n["Resources"].get("CPU")]
    return max(1, len(cpus)), {"num_cpus": max(1, int(min(cpus, default=2)) // 2)}


@contextlib.contextmanager
def _quiet_console(ctx: Any) -> Iterator[None]:
    """Ray Data reports every dataset and draws bars on the console; a library prints nothing
    (the progress goes through the run's callback, and Ray Data's log file in the session's
    folder keeps every line)."""
    import logging

    handlers = [h for h in logging.getLogger("ray.data").handlers
                if not isinstance(h, logging.FileHandler)]
    levels = [h.level for h in handlers]
    bars, ctx.enable_progress_bars = ctx.enable_progress_bars, False
    errored, ctx.max_errored_blocks = ctx.max_errored_blocks, -1  # given up: decoded here
    for h in handlers:  # errors too: the run raises them, in one line
        h.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        ctx.enable_progress_bars, ctx.max_errored_blocks = bars, errored
        for h, level in zip(handlers, levels, strict=True):
            h.setLevel(level)


def ray_results(tasks: Sequence[DecodeTask], *, address: str, recipe: EncoderRecipe,
                spec: ImageSpec, max_pixels: int, batch_size: int, known: np.ndarray,
                fallback: Callable[[list[DecodeTask]], Generator[DecodeResult, None, None]]
                ) -> Generator[DecodeResult, None, None]:
    """Decoded and embedded results of ``tasks`` from the cluster, in any order, each file
    once (``vector`` set, or ``error``, or neither for content the catalog holds); files the
    cluster gave up on come from ``fallback`` (the local decode pool: pixels)."""
    ray = require_ray()
    # Ray's driver prints the cluster's error notices ("(raylet) Task ... failed", such as an
    # actor killed as Ray Data winds its pool down) on sys.stdout whatever log_to_driver says;
    # a command's stdout is its data (--json), so for the run, shutdown included, they go to
    # stderr.
    with contextlib.redirect_stdout(sys.stderr):
        yield from _ray_run(ray, tasks, address, recipe, spec, max_pixels, batch_size, known,
                            fallback)


def _ray_run(ray: Any, tasks: Sequence[DecodeTask], address: str, recipe: EncoderRecipe,
             spec: ImageSpec, max_pixels: int, batch_size: int, known: np.ndarray,
             fallback: Callable[[list[DecodeTask]], Generator[DecodeResult, None, None]]
             ) -> Generator[DecodeResult, None, None]:
    started = connect(address)
    try:
        size, resources = _pool(ray)
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        items = [{"task": pickle.dumps(t, protocol=pickle.HIGHEST_PROTOCOL)} for t in tasks]
        # A block is a commit batch: results stream back a block at a time, as it is embedded.
        ds = ray.data.from_items(items, override_num_blocks=min(
            MAX_BLOCKS, max(1, -(-len(items) // max(1, batch_size)))))
        with warnings.catch_warnings():  # named parameters have no task retries yet
            warnings.simplefilter("ignore", DeprecationWarning)
            ds = ds.map_batches(decode_batch, batch_size=CHUNK, batch_format="numpy",
                                fn_kwargs={"spec": spec, "max_pixels": max_pixels,
                                           "known": ray.put(known)},
                                max_retries=DECODE_TRIES)
        ds = ds.map_batches(
            Embedder, fn_constructor_kwargs={"recipe": recipe}, batch_size=max(1, batch_size),
            batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=size),
            runtime_env={"env_vars": env}, **resources)
        with _quiet_console(ray.data.DataContext.get_current()):
            yield from _received(ds, tasks, batch_size, fallback)
    except (TypeError, pickle.PicklingError) as exc:
        if recipe.encoder is None:
            raise
        why = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
        raise IndexingError(f"the encoder given to this collection cannot travel to Ray "
                            f"workers ({why}); open the collection by model name") from None
    finally:
        if started:
            ray.shutdown()


def _received(ds: Any, tasks: Sequence[DecodeTask], batch_size: int,
              fallback: Callable[[list[DecodeTask]], Generator[DecodeResult, None, None]]
              ) -> Generator[DecodeResult, None, None]:
    import ray

    expected = {t.path for t in tasks}
    batches = ds.iter_batches(batch_size=max(1, batch_size), batch_format="numpy")
    try:
        for batch in batches:
            for blob, vector, has in zip(batch["result"], batch["vector"], batch["has_vector"],
                                         strict=True):
                res: DecodeResult = pickle.loads(blob)
                if res.path not in expected:
                    continue  # a retried task's second copy
                expected.discard(res.path)
                if has:
                    res.vector = np.array(vector, dtype=np.float32)  # batches may be read-only
                yield res
    except ray.exceptions.RayError as exc:
        raise IndexingError(f"the Ray run failed: {_first_line(exc)}") from None
    finally:
        with contextlib.suppress(Exception):
            batches.close()  # stops the pipeline when the driver stops early
    missing = [t for t in tasks if t.path in expected]
    if missing:
        import logging

        logging.getLogger("retrieval").warning(
            "the Ray cluster gave up on %d file(s) (see Ray Data's log); decoding them here",
            len(missing))
        results = fallback(missing)
        with contextlib.closing(results):
            yield from results


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in reversed(lines):  # the cause is usually last: "ModelMismatchError: ..."
        if "Error:" in ln:
            return ln.removeprefix("retrieval.errors.")
    return lines[0] if lines else type(exc).__name__
