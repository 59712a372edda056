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
import re
import string
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

SOT, EOT = "<start_of_text>", "<end_of_text>"
MERGES_FILE = "bpe_merges.txt"
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

# Printable ASCII without '&', plus tab and newline: text that ftfy.fix_text returns unchanged
# (no mojibake, entities, escapes, wide or curly forms can be in it; a property test checks it),
# so the common query skips importing ftfy.
_PLAIN = re.compile(r"[\x20-\x25\x27-\x7e\t\n]*")


def _basic_clean(text: str) -> str:
    if not _PLAIN.fullmatch(text):
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

    def __init__(self, merges: Sequence[str], *, context_length: int = 77,
                 clean: str = "lower", special_tokens: Sequence[str] = (SOT, EOT)) -> None:
        import regex

        # A merge is kept as its line, "first second": the dictionaries below are built from
        # plain strings, which keeps loading the 48,894 merges of CLIP's vocabulary cheap.
        self.merges = list(merges)
        self.context_length = int(context_length)
        self.clean_mode = clean
        self._clean = clean_function(clean)
        self.special_tokens = list(special_tokens)
        _, alphabet = byte_alphabet()
        vocab = [*alphabet, *(c + "</w>" for c in alphabet),
                 *(m.replace(" ", "") for m in self.merges), *self.special_tokens]
        self.encoder = dict(zip(vocab, range(len(vocab)), strict=True))
        self.ranks = dict(zip(self.merges, range(len(self.merges)), strict=True))
        self.sot_id = self.encoder[self.special_tokens[0]]
        self.eot_id = self.encoder[self.special_tokens[1]]
        alternatives = "|".join(regex.escape(t) for t in self.special_tokens)
        self._split = regex.compile(
            alternatives + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE).findall
        self._specials = frozenset(self.special_tokens)
        self._bpe_cache: dict[str, list[str]] = {}

    @classmethod
    def from_folder(cls, folder: Path, config: dict[str, Any]) -> ClipTokenizer:
        return cls(read_merges(folder / config.get("merges", MERGES_FILE)),
                   context_length=config["context_length"], clean=config["clean"],
                   special_tokens=config["special_tokens"])

    def _bpe(self, word: str) -> list[str]:
        cached = self._bpe_cache.get(word)
        if cached is not None:
            return cached
        parts = [*word[:-1], word[-1] + "</w>"]
        ranks, never = self.ranks, len(self.ranks)
        while len(parts) > 1:
            # The adjacent pair merged first in training is merged first here.
            rank, first, second = min((ranks.get(f"{a} {b}", never), a, b)
                                      for a, b in itertools.pairwise(parts))
            if rank == never:
                break
            merged: list[str] = []
            i = 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == first and parts[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        if len(self._bpe_cache) < 100_000:
            self._bpe_cache[word] = parts
        return parts

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
        text = "#version: 0.2 (written by retrieval)\n" + "\n".join(self.merges) + "\n"
        (folder / MERGES_FILE).write_text(text, encoding="utf-8")


def read_merges(path: Path) -> list[str]:
    """Merge rules ("first second" lines) from a CLIP BPE file, gzip or plain; the first line
    is a header."""
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8") as f:
            text = f.read()
    else:
        text = path.read_text(encoding="utf-8")
    return [line for line in text.split("\n")[1:] if " " in line]


# --- the language of a text, for NLLB text towers -------------------------------------------------

# NLLB's text tower reads a language code before the text (NLLB-CLIP pools at that position), so
# a text is tagged with the code of the script it is written in: kana before Han, so Japanese
# with kanji is Japanese; texts in other scripts (Latin included) get the tokenizer's default.
SCRIPT_LANGUAGES = (
    ("[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f]", "jpn_Jpan"),
    ("[\uac00-\ud7af\u1100-\u11ff\u3130-\u318f]", "kor_Hang"),
    ("[\u4e00-\u9fff\u3400-\u4dbf\uf900-\ufaff\U00020000-\U0002ffff]", "zho_Hans"),
    ("[\u0400-\u04ff]", "rus_Cyrl"),
    ("[\u0600-\u06ff]", "arb_Arab"),
    ("[\u0370-\u03ff]", "ell_Grek"),
    ("[\u0590-\u05ff]", "heb_Hebr"),
    ("[\u0e00-\u0e7f]", "tha_Thai"),
    ("[\u0900-\u097f]", "hin_Deva"),
)
_SCRIPTS = [(re.compile(pattern), code) for pattern, code in SCRIPT_LANGUAGES]


def text_language(text: str, default: str) -> str:
    """The NLLB language code of a text, chosen by the script it is written in."""
    if text.isascii():
        return default
    return next((code for pattern, code in _SCRIPTS if pattern.search(text)), default)


# --- Hugging Face tokenizers --------------------------------------------------------------------

class HFTokenizer:
    """A Hugging Face ``tokenizers`` tokenizer used as open_clip's ``HFTokenizer`` uses it: the
    same cleaning, the special tokens the file's post-processor adds, truncation to the
    context length from ``truncation_side``, padding to it with the pad id on
    ``padding_side`` (Gemma's tokenizer, SigLIP 2's, pads on the left), and optionally the
    separator token replaced by 0 (``strip_sep_token``)."""

    def __init__(self, path: Path, *, context_length: int, clean: str = "whitespace",
                 pad_id: int = 0, sep_id: int | None = None, strip_sep_token: bool = False,
                 languages: dict[str, int] | None = None, default_language: str | None = None,
                 padding_side: str = "right", truncation_side: str = "right") -> None:
        try:
            from tokenizers import Tokenizer as RustTokenizer
        except ImportError:
            from ..errors import ModelError

            raise ModelError(
                "this model's text tower uses a Hugging Face tokenizer, which needs the "
                "tokenizers package; install the extra: pip install 'retrieval[multilingual]' "
                "(pip install -e '.[multilingual]' in a checkout)") from None
        for side in (padding_side, truncation_side):
            if side not in ("left", "right"):
                raise ValueError(f"unknown padding or truncation side {side!r}")
        self.path = path
        self.context_length = int(context_length)
        self.clean_mode = clean
        self._clean = clean_function(clean)
        self.pad_id, self.sep_id, self.strip_sep_token = pad_id, sep_id, strip_sep_token
        self.padding_side, self.truncation_side = padding_side, truncation_side
        # NLLB: the file's template starts every text with the default language's code; it is
        # replaced by the code of the text's script (see text_language)
        self.languages, self.default_language = languages, default_language
        self._tok = RustTokenizer.from_file(str(path))
        self._tok.no_padding()
        self._tok.no_truncation()

    @classmethod
    def from_folder(cls, folder: Path, config: dict[str, Any]) -> HFTokenizer:
        return cls(folder / config.get("file", HF_TOKENIZER_FILE),
                   context_length=config["context_length"], clean=config["clean"],
                   pad_id=config.get("pad_id", 0), sep_id=config.get("sep_id"),
                   strip_sep_token=config.get("strip_sep_token", False),
                   languages=config.get("languages"),
                   default_language=config.get("default_language"),
                   padding_side=config.get("padding_side", "right"),
                   truncation_side=config.get("truncation_side", "right"))

    def __call__(self, texts: Sequence[str], context_length: int | None = None) -> np.ndarray:
        length = context_length or self.context_length
        self._tok.enable_truncation(length, direction=self.truncation_side)
        try:
            encoded = self._tok.encode_batch([self._clean(t) for t in texts])
        finally:
            self._tok.no_truncation()
        out = np.full((len(texts), length), self.pad_id, dtype=np.int64)
        first = np.zeros(len(texts), dtype=np.int64)  # where each text's ids start
        for row, enc in enumerate(encoded):
            ids = enc.ids[:length]
            if self.padding_side == "left":
                first[row] = length - len(ids)
            out[row, first[row]:first[row] + len(ids)] = ids
        if self.languages and self.default_language:
            default = self.languages[self.default_language]
            for row, text in enumerate(texts):
                code = text_language(text, self.default_language)
                if out[row, first[row]] == default and code in self.languages:
                    out[row, first[row]] = self.languages[code]
        if self.strip_sep_token and self.sep_id is not None:
            out[out == self.sep_id] = 0
        return out

    def describe(self) -> dict[str, Any]:
        return {"kind": "hf", "context_length": self.context_length, "clean": self.clean_mode,
                "file": HF_TOKENIZER_FILE, "pad_id": self.pad_id, "sep_id": self.sep_id,
                "strip_sep_token": self.strip_sep_token, "languages": self.languages,
                "default_language": self.default_language, "padding_side": self.padding_side,
                "truncation_side": self.truncation_side}

    def save(self, folder: Path) -> None:
        self._tok.save(str(folder / HF_TOKENIZER_FILE))


def load_tokenizer(folder: Path, config: dict[str, Any]) -> ClipTokenizer | HFTokenizer:
    """The tokenizer an export describes."""
    if config.get("kind") == "clip-bpe":
        return ClipTokenizer.from_folder(folder, config)
    if config.get("kind") == "hf":
        return HFTokenizer.from_folder(folder, config)
    raise ValueError(f"unknown tokenizer kind {config.get('kind')!r}")
