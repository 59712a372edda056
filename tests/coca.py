"""A tiny CoCa (contrastive towers + caption decoder) written in open_clip's ``local-dir`` layout:
random, deterministic weights, loaded by the real code (see :mod:`models`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from models import save_weights, write_config

TINY_COCA_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16,
                   "patch_size": 8, "attentional_pool": True, "attn_pooler_queries": 9,
                   "attn_pooler_heads": 2, "output_tokens": True},
    "text_cfg": {"context_length": 76, "vocab_size": 49408, "width": 32, "heads": 2,
                 "layers": 2, "embed_cls": True, "output_tokens": True},
    "multimodal_cfg": {"context_length": 76, "vocab_size": 49408, "width": 32, "heads": 2,
                       "layers": 2, "attn_pooler_heads": 2},
    "custom_text": True,
}


def write_tiny_coca(folder: Path, *, seed: int = 0) -> Path:
    """Write a tiny CoCa (contrastive towers + caption decoder) in the ``local-dir`` layout."""
    import open_clip
    import torch

    cfg = json.loads(json.dumps(TINY_COCA_CONFIG))
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = open_clip.CoCa(**{k: v for k, v in cfg.items() if k != "custom_text"})
    projection = model.text_decoder.text_projection  # left uninitialised by open_clip
    torch.nn.init.normal_(projection, std=projection.shape[0] ** -0.5)
    save_weights(folder, model)
    write_config(folder, cfg)
    return folder
