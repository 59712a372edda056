"""Captioners: CoCa models that write a caption for an image.

A captioner is named like any model (:class:`~.spec.ModelSpec`: ``coca_ViT-B-32`` +
``mscoco_finetuned_laion2b_s13b_b90k``, a checkpoint file, ``hf-hub:``, ``local-dir:``, or the
built-in ``demo-captioner``) and loaded through the same offline-aware code as encoders. Its
identity (config and weights) and the generation options are recorded with every caption it
writes, so a collection knows which captions a different model or different options would
change.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ModelError, WeightsUnavailableError
from .downloads import as_captioner
from .generation import GenerationOptions, Tokens, beam_search, sample
from .openclip import create_open_clip, image_spec_from_cfg, pixels_to_tensor, resolve_device
from .spec import ModelSpec

DEMO_CAPTIONER = "demo-captioner"


class Captioner:
    """A loaded CoCa model that writes captions for preprocessed images."""

    def __init__(self, spec: ModelSpec, device: str | None = "auto") -> None:
        import open_clip

        self.spec = spec
        self.device = resolve_device(device)
        try:
            self.loaded = create_open_clip(spec, self.device)
        except WeightsUnavailableError as exc:
            raise WeightsUnavailableError(as_captioner(str(exc))) from None
        self.model = self.loaded.model.eval()
        if not hasattr(self.model, "text_decoder"):
            raise ModelError(
                f"model {spec} has no text decoder, so it cannot write captions: use a CoCa "
                f"model (coca_ViT-B-32 with mscoco_finetuned_laion2b_s13b_b90k, or "
                f"{DEMO_CAPTIONER})")
        self.image_spec = image_spec_from_cfg(open_clip.get_model_preprocess_cfg(self.model))
        tokenizer = self.loaded.tokenizer
        if not hasattr(tokenizer, "sot_token_id"):
            raise ModelError(f"model {spec}: captions need open_clip's CLIP tokenizer; this "
                             f"model has {type(tokenizer).__name__}")
        self.tokenizer = tokenizer
        self.tokens = Tokens(int(tokenizer.sot_token_id), int(tokenizer.eot_token_id),
                             int(getattr(self.model, "pad_id", 0)))
        self.context_length = int(getattr(self.model, "context_length", 76))
        self._identity: str | None = None

    @property
    def identity(self) -> str:
        """SHA-256 of the model's config and weights (as an encoder's identity)."""
        if self._identity is None:
            from .export import model_identity

            self._identity = model_identity(self.model, self.loaded.config)
        return self._identity

    def key(self, options: GenerationOptions) -> str:
        """What a caption depends on: the model identity and the generation options."""
        doc = {"model": self.identity, "options": options.check(self.context_length).key()}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    def generate(self, pixels: np.ndarray, options: GenerationOptions | None = None
                 ) -> list[str]:
        """One caption per uint8 image (N, H, W, 3) preprocessed for this model."""
        import torch

        opts = (options or GenerationOptions()).check(self.context_length)
        if len(pixels) == 0:
            return []
        with torch.inference_mode():
            images = pixels_to_tensor(pixels, self.image_spec, self.device)
            if opts.generation_type == "beam_search":
                rows: Sequence[Any] = beam_search(self.model, images, opts, self.tokens)
            else:
                rows = list(sample(self.model, images, opts, self.tokens))
        return [self.decode(row) for row in rows]

    def decode(self, ids: Any) -> str:
        """Caption text of generated ids: up to the end of text, without special tokens."""
        out = []
        for i in ids.tolist()[1:]:
            if i in (self.tokens.eot, self.tokens.pad):
                break
            out.append(i)
        return " ".join(self.tokenizer.decode(out).split())


def load_captioner(model: str | ModelSpec = DEMO_CAPTIONER, pretrained: str | None = None,
                   device: str | None = "auto") -> Captioner:
    """Load a CoCa captioner; raises a :class:`ModelError` with a one-line reason."""
    spec = model if isinstance(model, ModelSpec) else ModelSpec.parse(model, pretrained)
    return Captioner(spec, device)
