"""Zero-shot tagging: each image scored against a label vocabulary by the collection's model.

Every label is embedded with the prompt templates and averaged; an image's probabilities are a
softmax of its similarities at the model's temperature; labels at or above ``min_score`` are
stored (up to ``top`` per image) with their scores, usable in filters and keyword search.
A run covers each image once per (model, labels, templates, settings): images already tagged
the same way are skipped, and images whose content changed are tagged again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..encoders import Encoder
from ..errors import InputError
from ..ingest.report import IndexProgress, ProgressCallback, no_progress
from ..items import IMAGE, SHOT

if TYPE_CHECKING:
    from ..storage import Catalog

DEFAULT_TEMPLATES = ("a photo of a {}.", "a picture of a {}.", "an image of a {}.")
BATCH = 2048


def check_labels(labels: Sequence[str], templates: Sequence[str]) -> list[str]:
    """The distinct, non-empty labels; refuses templates without a ``{}``."""
    out = list(dict.fromkeys(lb.strip() for lb in labels if lb.strip()))
    if not out:
        raise InputError("no labels to tag with")
    if not templates or any("{}" not in t for t in templates):
        raise InputError("each prompt template needs a {} where the label goes")
    return out


def signature(model: str, labels: Sequence[str], templates: Sequence[str], top: int,
              min_score: float) -> str:
    """What identifies a tagging run: images it covered need no second pass."""
    return hashlib.sha256(json.dumps(
        [model, list(labels), list(templates), top, min_score]).encode()).hexdigest()


def label_vectors(encoder: Encoder, labels: Sequence[str], templates: Sequence[str]
                  ) -> np.ndarray:
    """One normalised vector per label: the mean of its prompts' embeddings."""
    prompts = [t.format(lb) for lb in labels for t in templates]
    emb = encoder.embed_texts(prompts).reshape(len(labels), len(templates), -1).mean(1)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def tag_images(catalog: Catalog, encoder: Encoder, dim: int, labels: Sequence[str], *,
               model: str, templates: Sequence[str] | None = None, top: int = 3,
               min_score: float = 0.1, progress: ProgressCallback | None = None
               ) -> dict[str, int]:
    """Tag the images (and the shots of videos) this run has not covered yet; returns
    ``tagged`` (tagged now), ``unchanged`` (the others) and ``labels`` (distinct labels)."""
    templates = templates or DEFAULT_TEMPLATES
    labels = check_labels(labels, templates)
    done = _tag(catalog, encoder, dim, labels, templates, signature(
        model, labels, templates, top, min_score), top, min_score, progress or no_progress)
    counts = catalog.counts()
    return {"tagged": done, "unchanged": counts[IMAGE] + counts.get(SHOT, 0) - done,
            "labels": len(labels)}


def _tag(catalog: Catalog, encoder: Encoder, dim: int, labels: list[str],
         templates: Sequence[str], run: str, top: int, min_score: float,
         progress: ProgressCallback) -> int:
    todo = catalog.untagged(run)
    if not len(todo):
        return 0
    classes = label_vectors(encoder, labels, templates)
    scale = float(getattr(encoder, "logit_scale", 100.0))
    progress(IndexProgress("tag", 0, len(todo)))
    done = 0
    for start in range(0, len(todo), BATCH):
        found, vecs = catalog.vectors(todo[start:start + BATCH].tolist(), dim)
        logits = scale * vecs @ classes.T
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        tags = {}
        for i, p in zip(found.tolist(), probs, strict=True):
            best = np.argsort(-p)[:top]
            tags[i] = [(labels[j], float(p[j])) for j in best if p[j] >= min_score]
        catalog.set_tags(tags, run)
        done += len(tags)
        progress(IndexProgress("tag", done, len(todo)))
    return done
