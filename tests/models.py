"""Small open_clip architectures defined by this project's tests, written in real layouts.

The weights are random but deterministic (seeded), and they are saved exactly as open_clip
expects them on disk, so every test exercises the real loading code (``local-dir:``, a
checkpoint file next to a built-in config name) rather than an in-memory shortcut.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TINY_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32,
                   "patch_size": 8},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2,
                 "layers": 2},
}


def write_tiny_model(folder: Path, *, seed: int = 0, fmt: str = "bin",
                     config: dict[str, Any] | None = None) -> Path:
    """Write an open_clip ``local-dir`` model (open_clip_config.json + weights) to ``folder``."""
    import open_clip
    import torch

    cfg = json.loads(json.dumps(config or TINY_CONFIG))
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = open_clip.CLIP(**cfg)
    state = model.state_dict()
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()},
                  str(folder / "open_clip_model.safetensors"))
    else:
        torch.save(state, folder / "open_clip_pytorch_model.bin")
    (folder / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": cfg,
        "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073],
                           "std": [0.26862954, 0.26130258, 0.27577711]},
    }))
    return folder
