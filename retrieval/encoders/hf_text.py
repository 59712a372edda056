"""Hugging Face text towers (open_clip's multilingual models: XLM-RoBERTa, NLLB, mT5): what a
model needs before it loads (the ``transformers`` package, the ``multilingual`` extra), the files
a ``local-dir`` folder holds for one, and NLLB's language code per text.

Nothing here imports torch or transformers at import time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ModelError
from .spec import HF_HUB_PREFIX, LOCAL_DIR_PREFIX, ModelSpec

# Files of a Hugging Face text tower and its tokenizer that a local-dir folder may hold.
HF_TEXT_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json", "sentencepiece.bpe.model", "spiece.model",
                 "vocab.txt")
MULTILINGUAL_HINT = ("pip install 'retrieval[multilingual]' (pip install -e '.[multilingual]' "
                     "in a checkout)")


def text_cfg(name: str) -> dict[str, Any]:
    """The text tower config of an open_clip name, where it can be read without loading (a
    built-in architecture, a local-dir folder, an hf-hub repository in the cache); else {}."""
    import open_clip

    doc: dict[str, Any] | None = None
    try:
        if name.startswith(LOCAL_DIR_PREFIX):
            path = Path(name[len(LOCAL_DIR_PREFIX):]) / "open_clip_config.json"
            doc = json.loads(path.read_text(encoding="utf-8")).get("model_cfg")
        elif name.startswith(HF_HUB_PREFIX):
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(name[len(HF_HUB_PREFIX):], "open_clip_config.json")
            if isinstance(found, str):
                doc = json.loads(Path(found).read_text(encoding="utf-8")).get("model_cfg")
        else:
            doc = open_clip.get_model_config(name.replace("/", "-"))
    except (OSError, ValueError, AttributeError):
        return {}
    cfg = (doc or {}).get("text_cfg") if isinstance(doc, dict) else None
    return cfg if isinstance(cfg, dict) else {}


def local_text_tower(folder: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """open_clip keyword arguments that find a local-dir model's text tower in its own folder.

    open_clip resolves a relative ``hf_model_name`` against the working directory; a folder
    whose config names its tower relative to itself (``"."``, or a subfolder holding the
    tower's config.json) can then be moved, and its identity does not hold a path. The whole
    model's weights are in the folder, so the tower is built from its config alone."""
    name = cfg.get("hf_model_name")
    if not name or Path(name).is_absolute() or not (Path(folder) / name / "config.json"
                                                    ).is_file():
        return {}
    return {"text_cfg": {**cfg, "hf_model_name": str((Path(folder) / name).resolve()),
                         "hf_model_pretrained": False}}


def needs_transformers(spec: ModelSpec, hf_name: str) -> ModelError:
    tower = f" ({hf_name})" if hf_name else ""
    return ModelError(f"model {spec} has a Hugging Face text tower{tower}, which needs the "
                      f"transformers package; install the extra: {MULTILINGUAL_HINT}")


def check_text_tower(spec: ModelSpec, cfg: dict[str, Any]) -> None:
    """A model with a Hugging Face text tower needs transformers (checked before any download:
    open_clip would fail only after fetching the weights)."""
    hf_name = cfg.get("hf_model_name")
    if not hf_name:
        return
    from open_clip import hf_model

    if getattr(hf_model, "transformers", None) is None:  # open_clip's own test
        raise needs_transformers(spec, str(hf_name))


class LanguageTokenizer:
    """open_clip's tokenizer of an NLLB text tower, each text tagged with the language code of
    the script it is written in (:func:`.tokenizer.text_language`) instead of always the
    tokenizer's default (``eng_Latn``): NLLB-CLIP reads the text tower's output at that code.

    Sets ``src_lang`` per group of texts, which works with transformers 4 and 5 (open_clip's
    ``set_language`` has no effect with transformers 5)."""

    def __init__(self, tokenizer: Any) -> None:
        import threading

        self.tokenizer = tokenizer
        self.default_language = str(tokenizer.tokenizer.src_lang)
        self.context_length = tokenizer.context_length
        self._lock = threading.Lock()

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> Any:
        import torch

        from .tokenizer import text_language

        texts = [texts] if isinstance(texts, str) else list(texts)
        groups: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            groups.setdefault(text_language(text, self.default_language), []).append(i)
        hf = self.tokenizer.tokenizer
        out = None
        with self._lock:
            try:
                for code, rows in groups.items():
                    hf.src_lang = code
                    ids = self.tokenizer([texts[i] for i in rows], context_length)
                    if out is None:
                        out = torch.empty((len(texts), ids.shape[1]), dtype=ids.dtype)
                    out[rows] = ids
            finally:
                hf.src_lang = self.default_language
        return out if out is not None else self.tokenizer(texts, context_length)


def with_languages(tokenizer: Any) -> Any:
    """An NLLB tokenizer (prefix language codes) as a :class:`LanguageTokenizer`; any other
    tokenizer as it is."""
    hf = getattr(tokenizer, "tokenizer", None)
    if (type(tokenizer).__name__ == "HFTokenizer" and type(hf).__name__.startswith("Nllb")
            and getattr(hf, "src_lang", None) and not getattr(hf, "legacy_behaviour", True)):
        return LanguageTokenizer(tokenizer)
    return tokenizer
