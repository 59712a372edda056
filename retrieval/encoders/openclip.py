"""The torch side of encoders: loading open_clip models (offline-aware) and embedding with them.

torch and open_clip are imported inside the functions that need them, so importing this module is
cheap. Searches never come here when the collection's model has an ONNX export
(:mod:`retrieval.encoders.runtime`); indexing on CUDA, training and exporting do.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np

from ..errors import InputError, ModelError, ModelNotFoundError, WeightsUnavailableError
from ..media import ImageSpec
from .downloads import (
    download_once,
    hf_cache,
    hub_model_unavailable,
    weights_unavailable,
    why_not,
)
from .hf_text import (
    HF_TEXT_FILES,
    check_text_tower,
    local_text_tower,
    needs_transformers,
    text_cfg,
    with_languages,
)
from .spec import (
    BUILTIN_MODELS,
    CHECKPOINT_SUFFIXES,
    HF_HUB_PREFIX,
    LOCAL_DIR_PREFIX,
    ModelSpec,
    looks_like_path,
)

if TYPE_CHECKING:
    import torch


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
            + (f", nor one of this project's models ({', '.join(sorted(BUILTIN_MODELS))})"
               if BUILTIN_MODELS else "")
        )
    return arch


def _check_builtin(spec: ModelSpec) -> None:
    """Validate a built-in name and its pretrained tag or file before open_clip sees them."""
    import open_clip

    arch = check_architecture(spec.name)
    pretrained = spec.pretrained
    if pretrained is None or open_clip.get_pretrained_cfg(arch, pretrained):
        return
    if looks_like_path(pretrained) or os.path.exists(pretrained):
        if not os.path.isfile(pretrained):
            raise WeightsUnavailableError(f"checkpoint file not found: {pretrained}")
        return
    tags = open_clip.list_pretrained_tags_by_model(arch)
    raise ModelNotFoundError(
        f"unknown pretrained tag {pretrained!r} for model {arch} and no such file; known tags: "
        + (", ".join(tags) if tags else "none (pass a checkpoint file)")
    )


def _fetch_tag_weights(spec: ModelSpec) -> str:
    """Make sure a pretrained tag's weights are in the local cache, downloading if possible;
    returns the cached file."""
    import open_clip

    arch = spec.name.replace("/", "-")
    cfg = open_clip.get_pretrained_cfg(arch, spec.pretrained)
    with _hub_mode() as online:
        try:
            return str(open_clip.download_pretrained(cfg))
        except Exception as exc:
            hub = cfg.get("hf_hub")
            source = (hub.strip("/") if hub else cfg.get("url")) or "its source"
            cache = hf_cache() if hub else os.path.join("~", ".cache", "clip")
            raise WeightsUnavailableError(weights_unavailable(
                arch, str(spec.pretrained), source, cache, exc, online)) from None


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


@dataclass
class LoadedModel:
    """An open_clip model as loaded: the module, its tokenizer, the name open_clip was given,
    its config (architecture and preprocessing) and the files its weights came from."""

    model: Any
    tokenizer: Any
    name: str
    config: dict[str, Any]
    sources: list[str] = field(default_factory=list)


def create_open_clip(spec: ModelSpec, device: str) -> LoadedModel:
    """Create the open_clip model and tokenizer.

    Raises a :class:`ModelError` with a one-line reason when the model cannot be had."""
    import open_clip

    name, pretrained = spec.open_clip_name()
    sources: list[str] = []
    overrides: dict[str, Any] = {}
    if name.startswith(LOCAL_DIR_PREFIX):
        folder = name[len(LOCAL_DIR_PREFIX):]
        _check_local_dir(folder)
        check_text_tower(spec, text_cfg(name))
        overrides = local_text_tower(folder, text_cfg(name))
        sources = _local_dir_files(folder)
    elif name.startswith(HF_HUB_PREFIX):
        check_text_tower(spec, text_cfg(name))
    else:
        _check_builtin(spec)
        check_text_tower(spec, text_cfg(name))
        if pretrained is not None:
            sources = [pretrained if os.path.isfile(pretrained) else _fetch_tag_weights(spec)]
    with _hub_mode() as online:
        try:
            model, _, _ = open_clip.create_model_and_transforms(
                name,
                pretrained=pretrained,
                device=device,
                require_pretrained=pretrained is not None or name.startswith(
                    (LOCAL_DIR_PREFIX, HF_HUB_PREFIX)),
                weights_only=True,  # a checkpoint never runs code (open_clip's default today)
                **overrides,
            )
            tokenizer = with_languages(open_clip.get_tokenizer(name))
        except ModelError:
            raise
        except Exception as exc:
            raise _load_error(spec, exc, online) from None
    if name.startswith(HF_HUB_PREFIX):
        sources = _hub_files(name[len(HF_HUB_PREFIX):])
    return LoadedModel(model, tokenizer, name, _model_config(name, model), sources)


def _load_error(spec: ModelSpec, exc: Exception, online: bool) -> ModelError:
    import pickle

    if isinstance(exc, pickle.UnpicklingError):  # torch.load(weights_only=True) refused it
        return ModelError(
            f"refused to load the weights of model {spec}: the file holds Python objects other "
            "than tensors, which loading could run as code; use a .safetensors file or a "
            "checkpoint of plain tensors")
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:300] + "..."
    if (isinstance(exc, ImportError) and exc.name == "transformers") or (
            "pip install transformers" in text):
        return needs_transformers(spec, "")
    cfg = text_cfg(spec.open_clip_name()[0])
    hf_name = cfg.get("hf_model_name")
    if hf_name and isinstance(exc, OSError):
        # transformers could not find the text tower's config or tokenizer files (the open_clip
        # config that names the tower was found: the tower is what is missing)
        return WeightsUnavailableError(
            f"the text tower of model {spec} ({hf_name}) is not in the local Hugging Face cache "
            f"({hf_cache()}) and cannot be downloaded: {why_not(exc, online)}; "
            f"{download_once('it')}")
    if cfg.get("hf_tokenizer_name") and isinstance(exc, OSError):
        # the weights loaded; a Hugging Face tokenizer (SigLIP's) comes from its own repository
        return WeightsUnavailableError(
            f"the tokenizer of model {spec} ({cfg['hf_tokenizer_name']}) is not in the local "
            f"Hugging Face cache ({hf_cache()}) and cannot be downloaded: "
            f"{why_not(exc, online)}; {download_once('it')}")
    if spec.name.startswith(HF_HUB_PREFIX) and (not online or _hub_failure(exc)):
        return WeightsUnavailableError(hub_model_unavailable(spec.name, exc, online))
    if isinstance(exc, (RuntimeError, KeyError)) and (
        "size mismatch" in text or "Missing key" in text or "Unexpected key" in text
    ):
        return ModelError(f"the checkpoint does not fit model {spec}: {text}")
    return ModelError(f"cannot load model {spec}: {type(exc).__name__}: {text}")


def _hub_failure(exc: BaseException) -> bool:
    """Whether loading failed for want of a file from the Hugging Face Hub."""
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, (HfHubHTTPError, LocalEntryNotFoundError)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _local_dir_files(folder: str) -> list[str]:
    path = Path(folder)
    weights = sorted(str(p) for p in path.iterdir() if p.is_file() and p.suffix in
                     CHECKPOINT_SUFFIXES)
    text = [str(path / f) for f in HF_TEXT_FILES if (path / f).is_file()]
    return [str(path / "open_clip_config.json"), *weights, *text]


def _hub_files(repo: str) -> list[str]:
    """The cached files of an open_clip repository on the Hugging Face Hub."""
    from huggingface_hub import try_to_load_from_cache

    out = []
    for filename in ("open_clip_config.json", "open_clip_model.safetensors",
                     "open_clip_pytorch_model.bin"):
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str):
            out.append(found)
    return out


def _model_config(name: str, model: Any) -> dict[str, Any]:
    """The architecture and preprocessing config a model was built from (its identity's
    non-weight half: two configs can share weights and still compute different things)."""
    import open_clip

    cfg: dict[str, Any] | None = None
    if name.startswith(LOCAL_DIR_PREFIX):
        doc = json.loads((Path(name[len(LOCAL_DIR_PREFIX):]) / "open_clip_config.json")
                         .read_text(encoding="utf-8"))
        cfg = doc.get("model_cfg")
    elif name.startswith(HF_HUB_PREFIX):
        files = [f for f in _hub_files(name[len(HF_HUB_PREFIX):])
                 if f.endswith("open_clip_config.json")]
        if files:
            cfg = json.loads(Path(files[0]).read_text(encoding="utf-8")).get("model_cfg")
    else:
        cfg = open_clip.get_model_config(name.replace("/", "-"))
    return {"model_cfg": cfg, "preprocess_cfg": dict(open_clip.get_model_preprocess_cfg(model)),
            "class": type(model).__name__}


class OpenClipEncoder:
    """An open_clip model in evaluation mode, embedding on CPU or CUDA."""

    def __init__(self, spec: ModelSpec, device: str | None = "auto") -> None:
        import torch

        self.spec = spec
        self.device = resolve_device(device)
        self.loaded = create_open_clip(spec, self.device)
        model = self.loaded.model.eval()
        self._model, self._tokenizer = model, self.loaded.tokenizer
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

    def warm(self, *towers: str) -> None:
        """Nothing to do: the model loads whole when the encoder is made."""

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
        return (float(value),) * 3
    a, b, c = (float(v) for v in value)
    return (a, b, c)


def _normalize(feats: torch.Tensor) -> np.ndarray:
    import torch

    feats = torch.nn.functional.normalize(feats.float(), dim=-1)
    return feats.cpu().numpy().astype(np.float32, copy=False)


def load_encoder(spec: ModelSpec, device: str | None = "auto") -> OpenClipEncoder:
    """Load an open_clip encoder; raises a :class:`ModelError` with a one-line reason."""
    try:
        import open_clip  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:  # an install for searching and indexing with exports only
        raise ModelError(
            f"model {spec} needs torch to load, and the {exc.name} package is not installed "
            "(searching and indexing need it only for a model without an ONNX export here): "
            "pip install torch open-clip-torch, or copy the model's export, made where they "
            "are installed, into $RETRIEVAL_EXPORTS") from None
    return OpenClipEncoder(spec, device)
