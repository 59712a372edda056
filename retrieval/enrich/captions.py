"""Generated captions: a CoCa model writes a caption for every image of a collection.

A generated caption is a text item with ``source = "generated"`` whose parent is its image (at
most one per image), stored beside the sidecar caption (``source = "caption"``) and user texts,
never over them. It has a text vector like any text, so ``target=text`` searches find it, and
its words are in the keyword index. Its metadata records what it was made from: the image's
content hash and the captioner key (model identity + generation options); a run generates
captions only for images without one, or whose content or captioner changed since.

Runs are incremental and resumable: each batch (decode, generate, embed, write) is committed
in one transaction, so an interrupted run loses at most the batch in flight and the next run
continues where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..encoders.spec import BUILTIN_MODELS, LOCAL_DIR_PREFIX, ModelSpec
from ..errors import InputError
from ..ingest.report import FileError, IndexProgress, no_progress, summary_dict
from ..items import GENERATED
from ..pathnames import shown
from ..storage.records import TextRecord
from .pictures import Pictures

if TYPE_CHECKING:
    from ..encoders import Encoder
    from ..encoders.captioner import Captioner
    from ..encoders.generation import GenerationOptions
    from ..storage import Catalog

DEMO_CAPTIONER = "demo-captioner"
# open_clip's CoCa captioners and their pretrained tags (tests/test_captions.py checks the list
# against open_clip's), named when a caption is asked for with no captioner to take
CAPTIONERS = (("coca_ViT-B-32", ("mscoco_finetuned_laion2b_s13b_b90k", "laion2b_s13b_b90k")),
              ("coca_ViT-L-14", ("mscoco_finetuned_laion2b_s13b_b90k", "laion2b_s13b_b90k")))


@dataclass(frozen=True)
class CaptionProgress(IndexProgress):
    """A caption run's progress (phase ``generate``): images done of total, and the rate."""

    rate: float | None = None  # images per second so far


@dataclass
class CaptionSummary:
    """What a caption run did: captions generated, images already up to date, failures."""

    captioner: str
    generated: int = 0
    unchanged: int = 0
    failed: int = 0
    errors: list[FileError] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return summary_dict(self)


def default_captioner(spec: ModelSpec | None) -> ModelSpec | None:
    """The captioner a collection uses when none is named: its own model when that is a CoCa,
    the demo captioner for the demo model, else none."""
    if spec is None:
        return ModelSpec(DEMO_CAPTIONER)
    if spec.name in ("demo", DEMO_CAPTIONER):
        return ModelSpec(DEMO_CAPTIONER)
    if spec.name.lower().startswith("coca") or _local_coca(spec):
        return spec
    return None


def _local_coca(spec: ModelSpec) -> bool:
    import json
    from pathlib import Path

    if not spec.name.startswith(LOCAL_DIR_PREFIX):
        return False
    config = Path(spec.name[len(LOCAL_DIR_PREFIX):]) / "open_clip_config.json"
    try:
        return "multimodal_cfg" in json.loads(config.read_text()).get("model_cfg", {})
    except (OSError, ValueError, AttributeError):
        return False


def captioner_spec(collection_spec: ModelSpec | None, captioner: str | ModelSpec | None,
                   pretrained: str | None = None) -> ModelSpec:
    """The captioner asked for, or the collection's default one; a clear error when none."""
    if isinstance(captioner, ModelSpec):
        return captioner
    if captioner:
        return ModelSpec.parse(captioner, pretrained, option="--captioner-pretrained")
    found = default_captioner(collection_spec)
    if found is None:
        raise InputError(
            f"the collection's model {collection_spec} cannot write captions; name a CoCa "
            "captioner, e.g. --captioner coca_ViT-B-32 --captioner-pretrained "
            f"mscoco_finetuned_laion2b_s13b_b90k, or --captioner {DEMO_CAPTIONER} "
            f"(built in: {', '.join(sorted(BUILTIN_MODELS))})")
    return found


def captioner_choices() -> str:
    """The captioners to choose from, as ``--captioner`` options."""
    coca = "; ".join(f"{name} with --captioner-pretrained {' or '.join(tags)}"
                     for name, tags in CAPTIONERS)
    return (f"{DEMO_CAPTIONER} (built in; it knows only the demo's coloured shapes); {coca} "
            "(weights downloaded once; the mscoco_finetuned tags write MSCOCO-style captions); "
            "or a CoCa of your own as hf-hub:ORG/REPO or local-dir:FOLDER")


def generate_captions(catalog: Catalog, collection_spec: ModelSpec | None,
                      encoder: Callable[[], Encoder], captioner: str | ModelSpec | None = None,
                      *, pretrained: str | None = None, options: GenerationOptions | None = None,
                      batch_size: int = 16, force: bool = False, device: str | None = "auto",
                      progress: Callable[[IndexProgress], None] | None = None
                      ) -> CaptionSummary:
    """Generate captions for the images of ``catalog`` that lack a current one (every image
    with ``force``), embedded with ``encoder()``; returns what was done. The caller holds the
    collection's write lock and brings its vector indexes up to date after
    (:meth:`retrieval.Collection.generate_captions`)."""
    from ..encoders.captioner import load_captioner
    from ..encoders.generation import GenerationOptions

    spec = captioner_spec(collection_spec, captioner, pretrained)
    loaded = load_captioner(spec, device=device)
    return caption_run(catalog, loaded, encoder, options or GenerationOptions(),
                       batch_size=batch_size, force=force, progress=progress)


def caption_run(catalog: Catalog, captioner: Captioner, encoder: Callable[[], Encoder],
                 options: GenerationOptions, *, batch_size: int = 16, force: bool = False,
                 progress: Callable[[IndexProgress], None] | None = None) -> CaptionSummary:
    """The work of :func:`generate_captions` on a catalog, with a loaded captioner."""
    from ..media import load_image

    report = progress or no_progress
    key = captioner.key(options)
    summary = CaptionSummary(str(captioner.spec))
    images = Pictures(catalog)  # and the keyframes of videos' shots
    current = {image: (meta.get("image_hash"), meta.get("captioner_key")) for image, meta
               in catalog.derived_metadata(GENERATED, (i for i, _, _ in images.items)).items()}
    todo = [(i, p, h) for i, p, h in images.items
            if force or current.get(i) != (h, key)]
    summary.unchanged = len(images) - len(todo)
    report(CaptionProgress("generate", 0, len(todo)))
    t0 = time.perf_counter()
    for start in range(0, len(todo), max(1, batch_size)):
        batch, pixels = [], []
        for item_id, path, content in todo[start:start + batch_size]:
            try:
                pixels.append(load_image(images.open(item_id, path), captioner.image_spec)[0])
                batch.append((item_id, content))
            except Exception as exc:  # unreadable or gone since indexing: skip it, say why
                summary.failed += 1
                summary.errors.append(FileError(path, _reason(exc)))
        if batch:
            texts = captioner.generate(np.stack(pixels), options)
            vectors = encoder().embed_texts(texts)
            catalog.write_derived(GENERATED, _records(batch, texts, vectors, key,
                                                      str(captioner.spec), options))
            summary.generated += len(batch)
        done = min(start + batch_size, len(todo))
        rate = done / max(1e-9, time.perf_counter() - t0)
        report(CaptionProgress("generate", done, len(todo), summary.generated, summary.failed,
                               rate=round(rate, 2)))
    summary.seconds = round(time.perf_counter() - t0, 2)
    return summary


def _reason(exc: Exception) -> str:
    from ..media import ImageDecodeError

    return exc.reason if isinstance(exc, ImageDecodeError) else f"{type(exc).__name__}: {exc}"


def _records(batch: Sequence[tuple[int, str | None]], texts: Sequence[str],
             vectors: np.ndarray, key: str, captioner: str, options: GenerationOptions
             ) -> list[TextRecord]:
    from ..media import hash_text

    return [TextRecord(text=text, vector=vec, content_hash=hash_text(text), source=GENERATED,
                       parent_id=image_id,
                       metadata={"captioner": captioner, "captioner_key": key,
                                 "image_hash": content, "options": options.key()})
            for (image_id, content), text, vec in zip(batch, texts, vectors, strict=True)]


def caption_images(images: Sequence[str | bytes], captioner: str | ModelSpec | None = None, *,
                   pretrained: str | None = None, options: GenerationOptions | None = None,
                   collection_spec: ModelSpec | None = None, device: str | None = "auto",
                   max_pixels: int | None = None) -> tuple[list[str], ModelSpec]:
    """Generated captions for images (files or their bytes), and the captioner that wrote
    them (``captioner``, else the default one of a collection bound to ``collection_spec``)."""
    import io

    from ..encoders.captioner import load_captioner
    from ..media import DEFAULT_MAX_PIXELS, ImageDecodeError, load_image

    spec = captioner_spec(collection_spec, captioner, pretrained)
    loaded = load_captioner(spec, device=device)
    pixels = []
    for image in images:
        source: Any = io.BytesIO(image) if isinstance(image, bytes) else image
        try:
            pixels.append(load_image(source, loaded.image_spec,
                                     max_pixels or DEFAULT_MAX_PIXELS)[0])
        except ImageDecodeError as exc:
            where = shown(image) if isinstance(image, str) else "image"
            raise InputError(f"{where}: {exc.reason}") from None
    return loaded.generate(np.stack(pixels), options) if pixels else [], spec
