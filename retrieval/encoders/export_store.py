"""Where ONNX exports live, and how a model finds its export without torch.

An export is derived data, like a FAISS index: a folder per model identity (a hash of the
model's config and weights, see :func:`retrieval.encoders.export.model_identity`) under
``$RETRIEVAL_EXPORTS`` (default: ``exports`` under ``$RETRIEVAL_HOME``)::

    ViT-B-32-3f2a9c0d1e2b4a5c/
        manifest.json        spec, identity, dimension, preprocessing, tokenizer, parity,
                             the weight files it came from (path, size, mtime), variants,
                             the size and SHA-256 of every file below (``files``)
        verified.json        when each file last hashed to its checksum (see .integrity)
        image.onnx (+ .data) image tower: uint8 pixels (N, H, W, 3) -> normalised vectors
        text.onnx (+ .data)  text tower: int64 token ids (N, L) -> normalised vectors
        image.int8.onnx ...  the optional int8 variant
        bpe_merges.txt.gz    or tokenizer.json: what the torch-free tokenizer needs

A collection records the identity its vectors were made with and finds its export by it. A
model spec (``--model X``) finds an export whose manifest names the same spec and whose weight
files are unchanged since the export, so a changed checkpoint never reuses a stale export. A
model whose export failed (an operator ONNX lacks, a tokenizer that cannot be reproduced) has a
manifest that says why, so it is not tried again on every run.

Nothing here imports torch or onnxruntime.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..fileio import atomic_write
from ..media import ImageSpec
from .spec import ModelSpec

ENV_EXPORTS = "RETRIEVAL_EXPORTS"
MANIFEST = "manifest.json"
EXPORT_FORMAT = 1
PRECISIONS = ("fp32", "int8")


def exports_dir() -> Path:
    """``$RETRIEVAL_EXPORTS``, else ``exports`` under the retrieval home folder."""
    if os.environ.get(ENV_EXPORTS):
        return Path(os.environ[ENV_EXPORTS]).expanduser()
    from ..config import home

    return home() / "exports"


def file_state(path: str) -> dict[str, Any] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return {"path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def sources_unchanged(sources: list[dict[str, Any]]) -> bool:
    """Whether every weight file is where it was, with the same size and modification time."""
    return bool(sources) and all(file_state(s["path"]) == s for s in sources)


@dataclass(frozen=True)
class Export:
    """One exported model: its folder and what its manifest says."""

    folder: Path
    manifest: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.manifest.get("status") == "ok"

    @property
    def identity(self) -> str:
        return str(self.manifest["identity"])

    @property
    def spec(self) -> ModelSpec:
        s = self.manifest["spec"]
        return ModelSpec(s["name"], s.get("pretrained"))

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def image_spec(self) -> ImageSpec:
        d = self.manifest["image_spec"]
        return ImageSpec(size=(int(d["size"][0]), int(d["size"][1])), mean=tuple(d["mean"]),
                         std=tuple(d["std"]), interpolation=d["interpolation"],
                         resize_mode=d["resize_mode"], fill_color=int(d["fill_color"]))

    @property
    def logit_scale(self) -> float:
        return float(self.manifest.get("logit_scale", 100.0))

    @property
    def reason(self) -> str:
        """Why the export failed (empty when it did not)."""
        return str(self.manifest.get("reason") or "")

    def has(self, precision: str) -> bool:
        return precision in self.manifest.get("variants", {})

    def tower_file(self, tower: str, precision: str) -> Path:
        """The ONNX file of ``tower`` (image or text) for ``precision``; a variant that kept a
        tower at full precision (its int8 version did not hold up) names the fp32 file."""
        variant = self.manifest["variants"][precision]
        return self.folder / (variant.get(tower) or self.manifest["variants"]["fp32"][tower])

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        """Size and SHA-256 of every file of the export, by name (empty for exports made before
        checksums were recorded; see :mod:`.integrity`)."""
        return dict(self.manifest.get("files") or {})

    def tower_names(self, tower: str, precision: str) -> list[str]:
        """The files loading ``tower`` at ``precision`` reads: its ONNX file, that file's
        external data, and for the text tower the tokenizer's file."""
        onnx = self.tower_file(tower, precision).name
        names = [onnx, *(n for n in sorted(self.files) if n.startswith(onnx + "."))]
        if tower == "text":
            tok = self.manifest.get("text", {}).get("tokenizer", {})
            names += [tok[k] for k in ("merges", "file") if tok.get(k)]
        return names

    def text_key(self, precision: str) -> str:
        """What query-text vectors of this export depend on: the checksums of the text tower's
        files and when the export was made, so a rebuilt export never meets vectors computed
        before (by a damaged one, say)."""
        files = self.files
        parts = [str(self.manifest.get("created_at", "")), precision,
                 *(f"{n}={files.get(n, {}).get('sha256', '?')}"
                   for n in self.tower_names("text", precision))]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _well_formed(export: Export) -> bool:
    """Whether a manifest holds what is read from it: one cut short or edited by hand is no
    export (made again by the next index run), never a traceback."""
    m = export.manifest
    try:
        read: list[Any] = [export.spec, export.identity, m["status"], export.files]
        if export.ok:
            read += [export.dim, export.image_spec, m["text"]["tokenizer"].get("kind"),
                     *(export.tower_names(t, p) for t in ("image", "text") for p in m["variants"])]
        return all(isinstance(f["size"], int) and isinstance(f["sha256"], str)
                   for f in export.files.values())
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        return False


def image_spec_dict(spec: ImageSpec) -> dict[str, Any]:
    return {"size": list(spec.size), "mean": list(spec.mean), "std": list(spec.std),
            "interpolation": spec.interpolation, "resize_mode": spec.resize_mode,
            "fill_color": spec.fill_color}


def _slug(spec: ModelSpec) -> str:
    base = spec.name.split(":", 1)[-1].rstrip("/").split("/")[-1] or "model"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", base)[:60]


class ExportStore:
    """The folder of exports."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else exports_dir()

    def folder_for(self, spec: ModelSpec, identity: str) -> Path:
        return self.root / f"{_slug(spec)}-{identity[:16]}"

    def _read(self, folder: Path) -> Export | None:
        try:
            manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
            return None
        export = Export(folder, manifest)
        return export if _well_formed(export) else None

    def all(self) -> list[Export]:
        """Every export in the store (failed ones included), by folder name."""
        if not self.root.is_dir():
            return []
        found = (self._read(p) for p in sorted(self.root.iterdir())
                 if p.is_dir() and not p.name.startswith("."))
        return [e for e in found if e is not None]

    def record(self, identity: str) -> Export | None:
        """The export (or recorded failure) of a model identity."""
        if not self.root.is_dir():
            return None
        for folder in self.root.glob(f"*-{identity[:16]}"):
            found = self._read(folder)
            if found is not None and found.identity == identity:
                return found
        return None

    def by_identity(self, identity: str, precision: str = "fp32") -> Export | None:
        """A usable export of this identity holding ``precision``, or None."""
        found = self.record(identity)
        if found is None or not found.ok or not found.has(precision):
            return None
        return found

    def for_spec(self, spec: ModelSpec) -> Export | None:
        """The export (or recorded failure) of the model ``spec`` names today: same spec, and
        weight files unchanged since it was made. Random weights never match."""
        if spec.random_weights:
            return None
        best = None
        for export in self.all():
            if export.manifest.get("spec") != spec.to_dict() or not sources_unchanged(
                    export.manifest.get("sources") or []):
                continue
            if best is None or export.manifest.get("created_at", "") > \
                    best.manifest.get("created_at", ""):
                best = export
        return best

    def write_manifest(self, folder: Path, manifest: dict[str, Any]) -> None:
        """Replace a manifest atomically (the manifest is what makes an export visible)."""
        atomic_write(folder / MANIFEST, json.dumps(manifest, indent=1))

    def commit(self, staging: Path, final: Path, replaces: Export | None = None) -> Path:
        """Move a fully written export folder into place; if another process committed the same
        identity meanwhile, keep theirs, unless this one ``replaces`` an export (made again
        because it is damaged, or a failure tried again): that one is removed first."""
        if replaces is not None:
            for n, old in enumerate(dict.fromkeys((replaces.folder, final))):
                retired = old.with_name(f".retired{n}-{staging.name}")
                with contextlib.suppress(FileNotFoundError):
                    os.rename(old, retired)  # processes that mapped its files keep them
                shutil.rmtree(retired, ignore_errors=True)
        try:
            os.rename(staging, final)
        except OSError:
            if self._read(final) is None:  # no export there (a crash, an unreadable manifest)
                shutil.rmtree(final, ignore_errors=True)
                os.rename(staging, final)
            else:
                shutil.rmtree(staging, ignore_errors=True)
        return final

    @contextlib.contextmanager
    def lock(self, identity: str) -> Iterator[None]:
        """Serialise exporting one identity across processes."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # not POSIX: commit() still keeps one copy
            yield
            return
        fd = os.open(self.root / f".lock-{identity[:16]}", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def remove(self, export: Export) -> None:
        shutil.rmtree(export.folder, ignore_errors=True)
