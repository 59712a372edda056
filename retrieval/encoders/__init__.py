"""Encoders: one protocol for embedding images and texts, two runtimes for one model.

* :mod:`.spec`: how a model is named (:class:`ModelSpec`) and what an encoder does
  (:class:`Encoder`);
* :mod:`.resolve`: which runtime embeds for a search or an index run, and why (``RUNTIMES``);
* :mod:`.openclip`: loading open_clip models with torch (training, CUDA, exporting);
* :mod:`.downloads`: the one line said when a model's files can be neither found nor fetched;
* :mod:`.hf_text`: Hugging Face text towers (multilingual models): the extra they need, NLLB's
  language codes;
* :mod:`.export`: exporting both towers to ONNX once per model identity, parity-checked;
  :mod:`.first_export`: a model's first export, made beside the index run that needs it;
* :mod:`.towers`: what each family's towers are exported as, and the torch-free tokenizer;
* :mod:`.export_store`: where exports live and how a model spec finds its export without torch;
* :mod:`.integrity`: the checksums of an export's files, checked cheaply on every load;
* :mod:`.runtime`: embedding with an export on ONNX Runtime, never importing torch;
* :mod:`.tokenizer`: open_clip's tokenizers without torch;
* :mod:`.text_cache`: a small persistent cache of query-text embeddings;
* :mod:`.captioner`, :mod:`.generation`: CoCa captioners and how they write a caption;
* :mod:`.guide`: the model guide (costs, published accuracy, licences) and the default model.

Importing this package is cheap: torch, open_clip and onnxruntime load on first use.
"""

from .openclip import OpenClipEncoder, check_architecture, load_encoder, resolve_device
from .spec import (
    BUILTIN_MODELS,
    DEFAULT_MODEL,
    HF_HUB_PREFIX,
    LOCAL_DIR_PREFIX,
    Encoder,
    ModelSpec,
)

__all__ = [
    "BUILTIN_MODELS",
    "DEFAULT_MODEL",
    "HF_HUB_PREFIX",
    "LOCAL_DIR_PREFIX",
    "Encoder",
    "ModelSpec",
    "OpenClipEncoder",
    "check_architecture",
    "load_encoder",
    "resolve_device",
]
