"""What to say when a model's files are neither cached nor downloadable: one line that names
what is missing, why it could not be fetched (in words, never an exception's class name) and
how to get going (download it once with network access, a local file or folder, the demo)."""

from __future__ import annotations

import os
from collections.abc import Iterator

from .spec import BUILTIN_MODELS

OFFLINE_VALUES = ("1", "true", "yes", "on")


def downloads_off() -> bool:
    """Whether ``HF_HUB_OFFLINE`` turns Hugging Face downloads off."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in OFFLINE_VALUES


def hf_cache() -> str:
    """The Hugging Face cache folder, as the user configured it."""
    home = os.environ.get("HF_HOME", os.path.join("~", ".cache", "huggingface"))
    return os.environ.get("HF_HUB_CACHE", os.path.join(home, "hub"))


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _first_sentence(exc: BaseException) -> str:
    """The innermost cause's first sentence (a whole one, up to 160 characters)."""
    *_, inner = _chain(exc)
    text = " ".join(str(inner).split()) or "no reason given"
    sentence = text.split(". ")[0].rstrip(".")
    if len(sentence) > 160:
        sentence = sentence[:160].rsplit(" ", 1)[0] + " ..."
    return sentence


def why_not(exc: BaseException, online: bool) -> str:
    """Why a download did not happen."""
    if downloads_off():
        return "offline mode is on (HF_HUB_OFFLINE is set)"
    if not online:
        return "huggingface.co cannot be reached from this machine (offline)"
    names = {type(e).__name__ for e in _chain(exc)}
    if "GatedRepoError" in names:
        return ("the repository is gated: accept its terms on huggingface.co and log in "
                "(huggingface-cli login)")
    if "RepositoryNotFoundError" in names:
        return "huggingface.co has no such repository (or it is private)"
    if "EntryNotFoundError" in names:
        return "the repository has no open_clip files (open_clip_config.json and weights)"
    return f"the download failed ({_first_sentence(exc)})"


def download_once(what: str) -> str:
    """The first fix: fetch it once where the network is."""
    unset = "unset HF_HUB_OFFLINE and " if downloads_off() else ""
    return f"{unset}run once with network access to cache {what}"


def try_demo() -> str:
    return f"try --model {next(iter(BUILTIN_MODELS))}" if BUILTIN_MODELS else ""


def weights_unavailable(arch: str, tag: str, source: str, cache: str, exc: BaseException,
                        online: bool) -> str:
    """A pretrained tag's weights: not cached, not downloadable."""
    fixes = [download_once("them"), "pass a checkpoint file with --pretrained FILE",
             try_demo()]
    return (f"weights of model {arch} ({tag}) are not in the local cache ({cache}) and cannot "
            f"be downloaded from {source}: {why_not(exc, online)}; " + _either(fixes))


def hub_model_unavailable(name: str, exc: BaseException, online: bool) -> str:
    """An ``hf-hub:`` model: not cached, not downloadable."""
    fixes = [download_once("it"), "use a copy of its files with --model local-dir:FOLDER",
             try_demo()]
    return (f"{name} is not in the local Hugging Face cache ({hf_cache()}) and cannot be "
            f"downloaded: {why_not(exc, online)}; " + _either(fixes))


def _either(fixes: list[str]) -> str:
    fixes = [f for f in fixes if f]
    return fixes[0] if len(fixes) == 1 else ", ".join(fixes[:-1]) + ", or " + fixes[-1]


CAPTIONER_OPTIONS = (("--pretrained FILE", "--captioner-pretrained FILE"),
                     ("--model local-dir:", "--captioner local-dir:"),
                     ("try --model demo", "try --captioner demo-captioner"))


def as_captioner(message: str) -> str:
    """A message above, said of a captioner: its fixes name the captioner's options."""
    for model_option, captioner_option in CAPTIONER_OPTIONS:
        message = message.replace(model_option, captioner_option)
    return message
