"""Text tokenizers that produce exactly open_clip's token ids, without torch.

open_clip's ``tokenizer`` module imports torch at the top, so a query that used it would pay
for importing torch. :class:`ClipTokenizer` is CLIP's byte-level BPE written against NumPy:
the same cleaning (ftfy, HTML unescaping, whitespace, lower case or canonical form), the same
regex split, the same merge ranks with the end-of-word suffix, start and end tokens, zero
padding, and truncation that keeps the end token in the last slot. :class:`HFTokenizer` wraps a
Hugging Face ``tokenizers`` file for the models whose text tower uses one.

A tokenizer is described by a small JSON-able dict (``describe()`` / :func:`load_tokenizer`)
that an ONNX export stores beside its model files, with the merges or ``tokenizer.json`` it
needs, so a query never needs open_clip either.
"""

from __future__ import annotations

import functools
import gzip
import html
import itertools
import string
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

SOT, EOT = "<start_of_text>", "<end_of_text>"
MERGES_FILE = "bpe_merges.txt.gz"
HF_TOKENIZER_FILE = "tokenizer.json"
CLEAN_MODES = ("lower", "whitespace", "canonicalize")


class Tokenizer(Protocol):
    """Texts in, an int64 array of token ids (N, length) out."""

    context_length: int

    def __call__(self, texts: Sequence[str], context_length: int | None = None) -> np.ndarray:
        ...

    def describe(self) -> dict[str, Any]:
        ...

    def save(self, folder: Path) -> None:
        ...


# --- cleaning ---------------------------------------------------------------------------------

def _basic_clean(text: str) -> str:
    import ftfy

    text = ftfy.fix_text(text)
    return html.unescape(html.unescape(text)).strip()


def _squash_whitespace(text: str) -> str:
    return " ".join(text.split())


_PUNCTUATION = str.maketrans("", "", string.punctuation)


def clean_function(mode: str) -> Callable[[str], str]:
    """open_clip's text cleaning modes: ``lower``, ``whitespace`` and ``canonicalize``."""
    if mode == "lower":
        return lambda t: _squash_whitespace(_basic_clean(t)).lower()
    if mode == "whitespace":
        return lambda t: _squash_whitespace(_basic_clean(t))
    if mode == "canonicalize":
        return lambda t: _squash_whitespace(
            _basic_clean(t).replace("_", " ").translate(_PUNCTUATION).lower())
    raise ValueError(f"unknown text cleaning mode {mode!r}; expected one of {CLEAN_MODES}")


# --- CLIP byte-level BPE ------------------------------------------------------------------------

@functools.cache
def byte_alphabet() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The printable character standing for each byte value (GPT-2's mapping), indexed by byte,
    and the same 256 characters in vocabulary order.

    Printable Latin-1 bytes stand for themselves and come first in the vocabulary; the other
    bytes stand for code points from 256 up, in byte order, after them."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    table: dict[int, str] = {b: chr(b) for b in keep}
    for n, b in enumerate(b for b in range(256) if b not in table):
        table[b] = chr(256 + n)
    return tuple(table[b] for b in range(256)), tuple(table.values())


class ClipTokenizer:
    """CLIP's tokenizer, token for token (see the module docstring)."""

    def __init__(self, merges: Sequence[tuple[str, str]], *, context_length: int = 77,
                 clean: str = "lower", special_tokens: Sequence[str] = (SOT, EOT)) -> None:
        import regex

        self.merges = [tuple(m) for m in merges]
        self.context_length = int(context_length)
        self.clean_mode = clean
        self._clean = clean_function(clean)
        self.special_tokens = list(special_tokens)
        _, alphabet = byte_alphabet()
        vocab = [*alphabet, *(c + "</w>" for c in alphabet),
                 *("".join(m) for m in self.merges), *self.special_tokens]
        self.encoder = {tok: i for i, tok in enumerate(vocab)}
        self.ranks = {m: i for i, m in enumerate(self.merges)}
        self.sot_id = self.encoder[self.special_tokens[0]]
        self.eot_id = self.encoder[self.special_tokens[1]]
        alternatives = "|".join(regex.escape(t) for t in self.special_tokens)
        self._split = regex.compile(
            alternatives + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE).findall
        self._specials = frozenset(self.special_tokens)
        self._bpe_cache: dict[str, tuple[str, ...]] = {}

    @classmethod
    def from_folder(cls, folder: Path, config: dict[str, Any]) -> ClipTokenizer:
        return cls(read_merges(folder / config.get("merges", MERGES_FILE)),
                   context_length=config["context_length"], clean=config["clean"],
                   special_tokens=config["special_tokens"])

    def _bpe(self, word: str) -> tuple[str, ...]:
        cached = self._bpe_cache.get(word)
        if cached is not None:
            return cached
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:
            # The adjacent pair merged first in training is merged first here.
            best = min(itertools.pairwise(parts), key=lambda p: self.ranks.get(p, len(self.ranks)))
            if best not in self.ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        out = tuple(parts)
        if len(self._bpe_cache) < 100_000:
            self._bpe_cache[word] = out
        return out

    def encode(self, text: str) -> list[int]:
        """Token ids of a text, without the start and end tokens."""
        alphabet, _ = byte_alphabet()
        ids: list[int] = []
        for piece in self._split(self._clean(text)):
            if piece in self._specials:  # a literal special token in the text stays one
                ids.append(self.encoder[piece])
                continue
            word = "".join(alphabet[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[tok] for tok in self._bpe(word))
        return ids

    def __call__(self, texts: Sequence[str], context_length: int | None = None) -> np.ndarray:
        length = context_length or self.context_length
        out = np.zeros((len(texts), length), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [self.sot_id, *self.encode(text), self.eot_id]
            if len(ids) > length:
                ids = ids[:length]
                ids[-1] = self.eot_id  # truncated, but still ended
            out[row, :len(ids)] = ids
        return out

    def describe(self) -> dict[str, Any]:
        return {"kind": "clip-bpe", "context_length": self.context_length,
                "clean": self.clean_mode, "special_tokens": self.special_tokens,
                "merges": MERGES_FILE, "eot_id": self.eot_id}

    def save(self, folder: Path) -> None:
        lines = ["#version: 0.2 (written by retrieval)"] + [" ".join(m) for m in self.merges]
        with gzip.open(folder / MERGES_FILE, "wt", encoding="utf-8", compresslevel=6) as f:
            f.write("\n".join(lines) + "\n")


def read_merges(path: Path) -> list[tuple[str, str]]:
    """Merge rules from a CLIP BPE file (gzip or plain; the first line is a header)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = []
    for line in lines[1:]:
        a, sep, b = line.partition(" ")
        if sep:
            merges.append((a, b))
    return merges


# --- Hugging Face tokenizers --------------------------------------------------------------------

class HFTokenizer:
    """A Hugging Face ``tokenizers`` tokenizer with open_clip's cleaning, padding to the context
    length with the tokenizer's pad id, truncation, and optionally the separator token
    replaced by 0 (``strip_sep_token``), as open_clip's ``HFTokenizer`` does."""

    def __init__(self, path: Path, *, context_length: int, clean: str = "whitespace",
                 pad_id: int = 0, sep_id: int | None = None, strip_sep_token: bool = False
                 ) -> None:
        from tokenizers import Tokenizer as RustTokenizer

        self.path = path
        self.context_length = int(context_length)
        self.clean_mode = clean
        self._clean = clean_function(clean)
        self.pad_id, self.sep_id, self.strip_sep_token = pad_id, sep_id, strip_sep_token
        self._tok = RustTokenizer.from_file(str(path))
        self._tok.no_padding()
        self._tok.no_truncation()

    @classmethod
    def from_folder(cls, folder: Path, config: dict[str, Any]) -> HFTokenizer:
        return cls(folder / config.get("file", HF_TOKENIZER_FILE),
                   context_length=config["context_length"], clean=config["clean"],
                   pad_id=config.get("pad_id", 0), sep_id=config.get("sep_id"),
                   strip_sep_token=config.get("strip_sep_token", False))

    def __call__(self, texts: Sequence[str], context_length: int | None = None) -> np.ndarray:
        length = context_length or self.context_length
        self._tok.enable_truncation(length)
        try:
            encoded = self._tok.encode_batch([self._clean(t) for t in texts])
        finally:
            self._tok.no_truncation()
        out = np.full((len(texts), length), self.pad_id, dtype=np.int64)
        for row, enc in enumerate(encoded):
            out[row, :len(enc.ids)] = enc.ids[:length]
        if self.strip_sep_token and self.sep_id is not None:
            out[out == self.sep_id] = 0
        return out

    def describe(self) -> dict[str, Any]:
        return {"kind": "hf", "context_length": self.context_length, "clean": self.clean_mode,
                "file": HF_TOKENIZER_FILE, "pad_id": self.pad_id, "sep_id": self.sep_id,
                "strip_sep_token": self.strip_sep_token}

    def save(self, folder: Path) -> None:
        self._tok.save(str(folder / HF_TOKENIZER_FILE))


def load_tokenizer(folder: Path, config: dict[str, Any]) -> ClipTokenizer | HFTokenizer:
    """The tokenizer an export describes."""
    if config.get("kind") == "clip-bpe":
        return ClipTokenizer.from_folder(folder, config)
    if config.get("kind") == "hf":
        return HFTokenizer.from_folder(folder, config)
    raise ValueError(f"unknown tokenizer kind {config.get('kind')!r}")
