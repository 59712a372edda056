"""What an export is made of: each tower as the module torch's ONNX exporter traces, and the
torch-free copy of the model's tokenizer.

* The image tower takes uint8 pixels (N, H, W, 3) and normalises them itself. Towers with
  re-parameterisable blocks (MobileOne / FastViT, MobileCLIP's image towers) are exported with
  their branches fused, as their authors prescribe for inference: the same function, a
  fraction of the operators.
* The text tower takes int64 token ids. Where positions after the end token cannot change the
  output it takes a dynamic sequence length, so a query is cut after its end token instead of
  being padded to the context length: a causal text transformer that pools at the end token
  (CLIP, PE-Core, MobileCLIP2-B), and Hugging Face towers that mask their padding and pool by
  mean or at the first token (XLM-RoBERTa, NLLB). Bidirectional towers that do not mask their
  padding (MobileCLIP's, SigLIP's, which pools at the last position) see the padding, so they
  keep the fixed context length their tokenizer pads to.

torch and open_clip are imported inside the functions.
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any

from ..errors import ModelError
from .hf_text import LanguageTokenizer
from .tokenizer import SCRIPT_LANGUAGES, ClipTokenizer, HFTokenizer

CLEAN_MODES = ("lower", "whitespace", "canonicalize")


class ExportFailed(ModelError):
    """The model cannot be exported faithfully; it stays on torch."""


def towers(model: Any, mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[Any, Any, bool]:
    """(image module, text module, whether the text module cuts after the end token)."""
    import torch
    import torch.nn.functional as F

    class ImageTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0)
            self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255.0)

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            x = (pixels.permute(0, 3, 1, 2).float() - self.mean) / self.std
            return F.normalize(self.model.encode_image(x).float(), dim=-1)

    causal = causal_text_tower(model)
    trim = causal is not None or trimmable_hf(model)

    class TextTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            if causal is None:
                # a Hugging Face tower masks its padding itself; other towers take the full
                # context, as open_clip does
                return F.normalize(self.model.encode_text(tokens).float(), dim=-1)
            # open_clip's text transformer on a sequence cut after the end token: the
            # positional embedding is sliced to its length and the causal mask made for it
            # (slicing the model's mask buffer would fix the length when it is the context's).
            t = causal
            n = tokens.shape[1]
            x = t.token_embedding(tokens) + t.positional_embedding[:n]
            mask = torch.full((n, n), float("-inf"), dtype=x.dtype).triu(1)
            x = t.transformer(x, attn_mask=mask)
            x = t.ln_final(x)
            x = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)]
            proj = t.text_projection
            if proj is not None:
                x = proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj
            return F.normalize(x.float(), dim=-1)

    return ImageTower().eval(), TextTower().eval(), trim


def causal_text_tower(model: Any) -> Any:
    """The module holding the text transformer when it is causal and pools at the end token
    (the largest id): CLIP itself, or a custom-text model's ``TextTransformer``; else None."""
    import open_clip

    if type(model) is open_clip.CLIP:
        tower = model
        pool = getattr(model, "text_pool_type", "argmax")
    elif type(model) is open_clip.CustomTextCLIP and type(model.text).__name__ == "TextTransformer":
        tower = model.text
        pool = tower.pool_type
        if tower.cls_emb is not None or tower.use_pad_mask:
            return None
    else:
        return None
    if getattr(tower, "attn_mask", None) is None or pool != "argmax":
        return None
    return tower


def trimmable_hf(model: Any) -> bool:
    """Hugging Face towers that mask their padding and pool by mean or at the first token."""
    import open_clip

    hf = hf_text_tower(model)
    return hf is not None and type(model) is open_clip.CustomTextCLIP and type(
        hf.pooler).__name__ in ("MeanPooler", "ClsPooler")


def hf_text_tower(model: Any) -> Any:
    """The model's open_clip ``HFTextEncoder``, or None."""
    text = getattr(model, "text", None)
    return text if type(text).__name__ == "HFTextEncoder" else None


def for_inference(model: Any) -> Any:
    """The model with its image tower's re-parameterisable branches fused (a copy), or the
    model itself when it has none."""
    visual = getattr(model, "visual", None)
    if visual is None or not any(callable(getattr(m, "reparameterize", None))
                                 for m in visual.modules()):
        return model
    from timm.utils.model import reparameterize_model

    fused = copy.deepcopy(model)
    fused.visual = reparameterize_model(fused.visual, inplace=True)
    return fused


def tokenizer_for_export(tokenizer: Any) -> ClipTokenizer | HFTokenizer:
    """A torch-free copy of an open_clip tokenizer, or :class:`ExportFailed` saying why not."""
    from open_clip import tokenizer as oct

    if type(tokenizer).__name__ == "SimpleTokenizer":
        if getattr(tokenizer, "reduction_fn", None) is not None:
            raise ExportFailed("its tokenizer drops tokens at random (reduction mask)")
        clean = next((mode for mode in CLEAN_MODES
                      if tokenizer.clean_fn is oct.get_clean_fn(mode)), None)
        if clean is None:
            raise ExportFailed("its tokenizer uses an unknown cleaning function")
        merges = [" ".join(m) for m in sorted(tokenizer.bpe_ranks, key=tokenizer.bpe_ranks.get)]
        specials = [tokenizer.decoder[i] for i in tokenizer.all_special_ids]
        return ClipTokenizer(merges, context_length=tokenizer.context_length, clean=clean,
                             special_tokens=specials)
    languages: dict[str, int] | None = None
    default_language = None
    if isinstance(tokenizer, LanguageTokenizer):  # NLLB: a language code per text
        tokenizer, default_language = tokenizer.tokenizer, tokenizer.default_language
        codes = {default_language, *(code for _, code in SCRIPT_LANGUAGES)}
        languages = {code: int(tokenizer.tokenizer.convert_tokens_to_ids(code))
                     for code in sorted(codes)}
    if type(tokenizer).__name__ == "HFTokenizer":
        return _hf_tokenizer(tokenizer, oct, languages, default_language)
    raise ExportFailed(f"its tokenizer ({type(tokenizer).__name__}) cannot be reproduced "
                       "without torch")


def _hf_tokenizer(tokenizer: Any, oct: Any, languages: dict[str, int] | None,
                  default_language: str | None) -> HFTokenizer:
    """open_clip's ``HFTokenizer`` as the ``tokenizers`` library runs it: the backend as
    transformers configured it (its post-processor adds the special tokens the tokenizer's
    config asks for), with the same padding and truncation sides."""
    if getattr(tokenizer, "tokenizer_mode", ""):
        raise ExportFailed(f"its tokenizer mode {tokenizer.tokenizer_mode!r} is not supported")
    hf = tokenizer.tokenizer
    if not getattr(hf, "is_fast", False):
        raise ExportFailed("its Hugging Face tokenizer has no fast (tokenizers) version")
    clean = next((mode for mode in CLEAN_MODES if tokenizer.clean_fn is oct.get_clean_fn(mode)),
                 None)
    if clean is None:
        raise ExportFailed("its tokenizer uses an unknown cleaning function")
    sides = (getattr(hf, "padding_side", "right"), getattr(hf, "truncation_side", "right"))
    if any(side not in ("left", "right") for side in sides):
        raise ExportFailed(f"its tokenizer pads or truncates on an unknown side {sides}")
    with tempfile.TemporaryDirectory() as tmp:
        hf.backend_tokenizer.save(os.path.join(tmp, "tokenizer.json"))
        return HFTokenizer(Path(tmp) / "tokenizer.json",
                           context_length=tokenizer.context_length, clean=clean,
                           pad_id=hf.pad_token_id or 0, sep_id=hf.sep_token_id,
                           strip_sep_token=tokenizer.strip_sep_token,
                           languages=languages, default_language=default_language,
                           padding_side=sides[0], truncation_side=sides[1])
