"""Model specs and the encoder protocol: what a model is called, and what an encoder does.

A model is named the way open_clip names it (see :class:`ModelSpec`):

* a built-in architecture plus a pretrained tag: ``ViT-B-32`` + ``laion2b_s34b_b79k``
  (downloaded once into the Hugging Face cache, offline afterwards);
* a built-in architecture plus a local checkpoint file: ``ViT-B-32`` + ``/path/model.bin``;
* ``hf-hub:org/repo`` (an open_clip repository on the Hugging Face Hub, or in its cache);
* ``local-dir:/path`` (a folder with ``open_clip_config.json`` and a weights file);
* ``demo``, the small model that ships inside this package, and ``demo-captioner``, a small
  CoCa (captions and embeddings) that ships beside it.

Nothing here imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import InputError, ModelNotFoundError
from ..media import ImageSpec

HF_HUB_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"
CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
DEMO_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "demo"
DEMO_CAPTIONER_DIR = DEMO_MODEL_DIR.parent / "demo-captioner"

# Models that ship with this project: name -> local-dir folder.
BUILTIN_MODELS: dict[str, Path] = {"demo": DEMO_MODEL_DIR, "demo-captioner": DEMO_CAPTIONER_DIR}


@dataclass(frozen=True)
class ModelSpec:
    """A model as open_clip names it: an architecture or schema'd id, plus a pretrained tag/file.

    ``hf-hub:``, ``local-dir:`` and this project's own models carry their weights: a
    ``pretrained`` beside them is refused (open_clip would ignore it). A built-in name with
    ``pretrained=None`` means randomly initialised weights (benchmarks only).
    """

    name: str
    pretrained: str | None = None

    @classmethod
    def parse(cls, name: str, pretrained: str | None = None, *, option: str = "--pretrained"
              ) -> ModelSpec:
        """Normalise user input: resolve local paths to absolute ones. ``option`` is how the
        user gave ``pretrained``, for the message that refuses a tag a model cannot take."""
        name = name.strip()
        if not name:
            raise ModelNotFoundError("empty model name")
        if pretrained and pretrained.strip() and carries_weights(name):
            raise InputError(
                f"{option} does not apply to model {name}, which carries its own weights; "
                f"drop {option} (it picks the weights of an open_clip architecture, as in "
                "--model ViT-B-32 --pretrained laion2b_s34b_b79k)")
        if name in BUILTIN_MODELS:
            return cls(name, None)
        if name.startswith(LOCAL_DIR_PREFIX):
            folder = name[len(LOCAL_DIR_PREFIX):]
            return cls(LOCAL_DIR_PREFIX + os.path.abspath(os.path.expanduser(folder)), None)
        if name.startswith(HF_HUB_PREFIX):
            return cls(name, None)
        if pretrained is not None:
            pretrained = pretrained.strip()
            if pretrained.lower() in ("", "none", "random"):
                pretrained = None
            elif looks_like_path(pretrained):
                pretrained = os.path.abspath(os.path.expanduser(pretrained))
        return cls(name, pretrained)

    @property
    def random_weights(self) -> bool:
        schema = self.name.startswith((HF_HUB_PREFIX, LOCAL_DIR_PREFIX))
        return not schema and self.name not in BUILTIN_MODELS and self.pretrained is None

    def open_clip_name(self) -> tuple[str, str | None]:
        """The (name, pretrained) pair to hand to open_clip."""
        if self.name in BUILTIN_MODELS:
            return LOCAL_DIR_PREFIX + str(BUILTIN_MODELS[self.name]), None
        return self.name, self.pretrained

    def to_dict(self) -> dict[str, str | None]:
        return {"name": self.name, "pretrained": self.pretrained}

    def __str__(self) -> str:
        return f"{self.name} ({self.pretrained})" if self.pretrained else self.name


# The model of new collections: the pick of the rule in encoders/guide.py (default_choice), from
# the costs measured here and the published figures; tests/test_guide.py checks they agree.
# SigLIP 2 tokenizes with Gemma's tokenizer: transformers (open_clip, in torch) and tokenizers
# (ONNX searches) are therefore dependencies of the package, not only of the multilingual extra.
DEFAULT_MODEL = ModelSpec("ViT-B-32-SigLIP2-256", "webli")
# The weights an architecture named without --pretrained gets: the default model's, and
# ViT-B-32's as they were when it was the default.
DEFAULT_WEIGHTS = {"ViT-B-32": "laion2b_s34b_b79k", DEFAULT_MODEL.name: DEFAULT_MODEL.pretrained}
# What `retrieval train` fine-tunes when no model is named: a plain CLIP, cheap to train on a CPU.
TRAIN_MODEL = ModelSpec("ViT-B-32", "laion2b_s34b_b79k")


def carries_weights(name: str) -> bool:
    """Whether a model name brings its own weights (no pretrained tag or file applies)."""
    return name in BUILTIN_MODELS or name.startswith((HF_HUB_PREFIX, LOCAL_DIR_PREFIX))


def looks_like_path(value: str) -> bool:
    return (
        os.sep in value
        or "/" in value
        or value.startswith(("~", "."))
        or value.lower().endswith(CHECKPOINT_SUFFIXES)
    )


@runtime_checkable
class Encoder(Protocol):
    """Embeds images and texts into one space; outputs are float32 and L2-normalised."""

    spec: ModelSpec
    dim: int
    image_spec: ImageSpec
    logit_scale: float

    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        """Embed a batch of preprocessed uint8 images shaped (N, H, W, 3)."""
        ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed a batch of texts."""
        ...

    def warm(self, *towers: str) -> None:
        """Load now what embedding with these towers (``"image"``, ``"text"``; none named:
        both) needs, so that the first call does not wait; a no-op for a runtime that loads
        everything when it is made."""
        ...
