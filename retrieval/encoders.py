"""Encoders: one protocol for embedding images and texts, and its open_clip implementation.

A model is named the way open_clip names it (see :class:`ModelSpec`):

* a built-in architecture plus a pretrained tag: ``ViT-B-32`` + ``laion2b_s34b_b79k``
  (downloaded once into the Hugging Face cache, offline afterwards);
* a built-in architecture plus a local checkpoint file: ``ViT-B-32`` + ``/path/model.bin``;
* ``hf-hub:org/repo`` (an open_clip repository on the Hugging Face Hub, or in its cache);
* ``local-dir:/path`` (a folder with ``open_clip_config.json`` and a weights file).

torch and open_clip are imported only when a model is actually loaded.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import urlparse

import numpy as np

from .errors import InputError, ModelError, ModelNotFoundError, WeightsUnavailableError
from .media import ImageSpec

if TYPE_CHECKING:
    import torch

HF_HUB_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"
CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")

def _demo_model_dir() -> str:
    return str(Path(__file__).parent / "models" / "demo")


# Models that ship with (or are registered by) this project: name -> local-dir folder.
_BUILTIN_MODELS: dict[str, Callable[[], str]] = {"demo": _demo_model_dir}


def register_model(name: str, folder: Callable[[], str]) -> None:
    """Make ``name`` usable as ``--model name``; ``folder`` returns a local-dir layout path."""
    _BUILTIN_MODELS[name] = folder


@dataclass(frozen=True)
class ModelSpec:
    """A model as open_clip names it: an architecture or schema'd id, plus a pretrained tag/file.

    ``pretrained`` is ignored for ``hf-hub:`` and ``local-dir:`` names, as in open_clip. A
    built-in name with ``pretrained=None`` means randomly initialised weights (benchmarks only).
    """

    name: str
    pretrained: str | None = None

    @classmethod
    def parse(cls, name: str, pretrained: str | None = None) -> ModelSpec:
        """Normalise user input: resolve local paths to absolute ones, drop ignored tags."""
        name = name.strip()
        if not name:
            raise ModelNotFoundError("empty model name")
        if name in _BUILTIN_MODELS:
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
            elif _looks_like_path(pretrained):
                pretrained = os.path.abspath(os.path.expanduser(pretrained))
        return cls(name, pretrained)

    @property
    def random_weights(self) -> bool:
        schema = self.name.startswith((HF_HUB_PREFIX, LOCAL_DIR_PREFIX))
        return not schema and self.name not in _BUILTIN_MODELS and self.pretrained is None

    def __str__(self) -> str:
        return f"{self.name} ({self.pretrained})" if self.pretrained else self.name


DEFAULT_MODEL = ModelSpec("ViT-B-32", "laion2b_s34b_b79k")


@runtime_checkable
class Encoder(Protocol):
    """Embeds images and texts into one space; outputs are float32 and L2-normalised."""

    spec: ModelSpec
    dim: int
    image_spec: ImageSpec

    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        """Embed a batch of preprocessed uint8 images shaped (N, H, W, 3)."""
        ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed a batch of texts."""
        ...


def _looks_like_path(value: str) -> bool:
    return (
        os.sep in value
        or "/" in value
        or value.startswith(("~", "."))
        or value.lower().endswith(CHECKPOINT_SUFFIXES)
    )


def resolve_device(device: str | None) -> str:
    """'auto' (or None) picks CUDA when available, else CPU; anything else is checked."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise InputError(f"unknown device {device!r} (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} asked for, but CUDA is not available on this machine")
    return str(dev)


# --- reaching the Hugging Face Hub -------------------------------------------------------------

@functools.cache
def hub_reachable() -> bool:
    """Whether the Hugging Face endpoint answers a TCP connection within a few seconds.

    Without this check huggingface_hub retries a dead network for about a minute before it
    falls back to its cache; with it an offline machine answers at once.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "huggingface.co", port), timeout=3):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _hub_mode() -> Iterator[bool]:
    """Put huggingface_hub in offline mode for the duration when the hub is unreachable.

    Offline mode makes hf_hub_download answer from the cache immediately. The flag is a module
    constant that huggingface_hub reads on every request, so it is set and restored here.
    """
    online = hub_reachable()
    if online:
        yield True
        return
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield False
    finally:
        constants.HF_HUB_OFFLINE = previous


def _hf_cache_hint() -> str:
    home = os.environ.get("HF_HOME", os.path.join("~", ".cache", "huggingface"))
    return os.environ.get("HF_HUB_CACHE", os.path.join(home, "hub"))


def _offline_hint(online: bool) -> str:
    if online:
        return ""
    return "; huggingface.co cannot be reached from this machine (offline)"


# --- loading -------------------------------------------------------------------------------

def check_architecture(name: str) -> str:
    """The open_clip config name for a built-in architecture; raises if there is none."""
    import open_clip

    arch = name.replace("/", "-")
    if arch not in open_clip.list_models():
        raise ModelNotFoundError(
            f"unknown model {name!r}: not an open_clip architecture (see "
            "`python -c 'import open_clip; print(open_clip.list_models())'`), nor an "
            "hf-hub:org/repo or local-dir:/path name"
            + (f", nor one of this project's models ({', '.join(sorted(_BUILTIN_MODELS))})"
               if _BUILTIN_MODELS else "")
        )
    return arch


def _check_builtin(spec: ModelSpec) -> None:
    """Validate a built-in name and its pretrained tag or file before open_clip sees them."""
    import open_clip

    arch = check_architecture(spec.name)
    pretrained = spec.pretrained
    if pretrained is None or open_clip.get_pretrained_cfg(arch, pretrained):
        return
    if _looks_like_path(pretrained) or os.path.exists(pretrained):
        if not os.path.isfile(pretrained):
            raise WeightsUnavailableError(f"checkpoint file not found: {pretrained}")
        return
    tags = open_clip.list_pretrained_tags_by_model(arch)
    raise ModelNotFoundError(
        f"unknown pretrained tag {pretrained!r} for model {arch} and no such file; known tags: "
        + (", ".join(tags) if tags else "none (pass a checkpoint file)")
    )


def _fetch_tag_weights(spec: ModelSpec) -> None:
    """Make sure a pretrained tag's weights are in the local cache, downloading if possible."""
    import open_clip

    arch = spec.name.replace("/", "-")
    cfg = open_clip.get_pretrained_cfg(arch, spec.pretrained)
    with _hub_mode() as online:
        try:
            open_clip.download_pretrained(cfg)
        except Exception as exc:
            source = cfg.get("hf_hub") or cfg.get("url") or "its source"
            raise WeightsUnavailableError(
                f"weights for {arch} ({spec.pretrained}) are not in the local cache and could not "
                f"be downloaded from {source}{_offline_hint(online)}. Run once with internet "
                f"access (they are cached in {_hf_cache_hint()}), or pass a checkpoint file with "
                f"--pretrained /path/to/open_clip_pytorch_model.bin"
                + (f", or use --model {next(iter(_BUILTIN_MODELS))}" if _BUILTIN_MODELS else "")
                + f" [{type(exc).__name__}]"
            ) from None


def _check_local_dir(folder: str) -> None:
    path = Path(folder)
    if not path.is_dir():
        raise WeightsUnavailableError(f"local-dir model folder not found: {folder}")
    config = path / "open_clip_config.json"
    if not config.is_file():
        raise WeightsUnavailableError(f"local-dir model {folder} has no open_clip_config.json")
    if not any(p.suffix in CHECKPOINT_SUFFIXES for p in path.iterdir() if p.is_file()):
        raise WeightsUnavailableError(
            f"local-dir model {folder} has no weights file (open_clip_model.safetensors or "
            "open_clip_pytorch_model.bin)"
        )


def create_open_clip(spec: ModelSpec, device: str) -> tuple[Any, Any, str]:
    """Create the open_clip model and tokenizer; returns (model, tokenizer, loaded name).

    Raises a :class:`ModelError` with a one-line reason when the model cannot be had."""
    import open_clip

    name, pretrained = spec.name, spec.pretrained
    if name in _BUILTIN_MODELS:
        name, pretrained = LOCAL_DIR_PREFIX + _BUILTIN_MODELS[name](), None
    if name.startswith(LOCAL_DIR_PREFIX):
        _check_local_dir(name[len(LOCAL_DIR_PREFIX):])
    elif name.startswith(HF_HUB_PREFIX):
        pass
    else:
        _check_builtin(spec)
        if pretrained is not None and not os.path.isfile(pretrained):
            _fetch_tag_weights(spec)
    with _hub_mode() as online:
        try:
            model, _, _ = open_clip.create_model_and_transforms(
                name,
                pretrained=pretrained,
                device=device,
                require_pretrained=pretrained is not None or name.startswith(
                    (LOCAL_DIR_PREFIX, HF_HUB_PREFIX)),
            )
            tokenizer = open_clip.get_tokenizer(name)
        except ModelError:
            raise
        except Exception as exc:
            raise _load_error(spec, exc, online) from None
    return model, tokenizer, name


def _load_error(spec: ModelSpec, exc: Exception, online: bool) -> ModelError:
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:300] + "..."
    if spec.name.startswith(HF_HUB_PREFIX):
        return WeightsUnavailableError(
            f"{spec.name} is not in the local Hugging Face cache ({_hf_cache_hint()}) and could "
            f"not be downloaded{_offline_hint(online)}: {text}"
        )
    if isinstance(exc, (RuntimeError, KeyError)) and (
        "size mismatch" in text or "Missing key" in text or "Unexpected key" in text
    ):
        return ModelError(f"the checkpoint does not fit model {spec}: {text}")
    return ModelError(f"cannot load model {spec}: {type(exc).__name__}: {text}")


class OpenClipEncoder:
    """An open_clip model in evaluation mode, embedding on CPU or CUDA."""

    def __init__(self, spec: ModelSpec, device: str | None = "auto") -> None:
        import torch

        self.spec = spec
        self.device = resolve_device(device)
        model, self._tokenizer, self._loaded_name = create_open_clip(spec, self.device)
        model.eval()
        self._model = model
        import open_clip

        self.image_spec = image_spec_from_cfg(open_clip.get_model_preprocess_cfg(model))
        with torch.inference_mode():
            probe = self._tokenizer(["a"]).to(self.device)
            self.dim = int(model.encode_text(probe).shape[-1])
            scale = getattr(model, "logit_scale", None)
            # the model's learned temperature, for zero-shot probabilities
            self.logit_scale = float(scale.exp()) if scale is not None else 100.0

    @property
    def model(self) -> torch.nn.Module:
        return self._model

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        import torch

        if self.device.startswith("cuda"):
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        if len(pixels) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.inference_mode(), self._autocast():
            x = pixels_to_tensor(pixels, self.image_spec, self.device)
            return _normalize(self._model.encode_image(x))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.inference_mode(), self._autocast():
            tokens = self._tokenizer(list(texts)).to(self.device)
            return _normalize(self._model.encode_text(tokens))


def image_spec_from_cfg(cfg: dict[str, Any]) -> ImageSpec:
    """The :class:`ImageSpec` of an open_clip preprocess config (model.visual.preprocess_cfg)."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    size = cfg.get("size", 224)
    size = (size, size) if isinstance(size, int) else tuple(size)[-2:]
    return ImageSpec(
        size=(int(size[0]), int(size[1])),
        mean=_triple(cfg.get("mean") or OPENAI_DATASET_MEAN),
        std=_triple(cfg.get("std") or OPENAI_DATASET_STD),
        interpolation=cfg.get("interpolation") or "bicubic",
        resize_mode=cfg.get("resize_mode") or "shortest",
        fill_color=int(cfg.get("fill_color") or 0),
    )


def pixels_to_tensor(pixels: np.ndarray, spec: ImageSpec, device: str) -> torch.Tensor:
    """uint8 (N, H, W, 3) pixels -> normalised float (N, 3, H, W) on ``device``."""
    import torch

    x = torch.from_numpy(np.require(pixels, np.uint8, ["C", "W"])).to(device)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1)
    return (x - mean) / std


def _triple(value: Any) -> tuple[float, float, float]:
    if isinstance(value, (int, float)):
        return (float(value),) * 3  # type: ignore[return-value]
    a, b, c = (float(v) for v in value)
    return (a, b, c)


def _normalize(feats: torch.Tensor) -> np.ndarray:
    import torch

    feats = torch.nn.functional.normalize(feats.float(), dim=-1)
    return feats.cpu().numpy().astype(np.float32, copy=False)


def load_encoder(spec: ModelSpec, device: str | None = "auto") -> OpenClipEncoder:
    """Load an open_clip encoder; raises a :class:`ModelError` with a one-line reason."""
    return OpenClipEncoder(spec, device)
