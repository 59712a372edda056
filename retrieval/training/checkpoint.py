"""Training checkpoints: what a resumed run needs, kept in a form ``torch.load`` reads with
``weights_only=True`` (tensors, dicts, lists, numbers, strings, None).

A checkpoint is a file in the output folder, which anyone who can write there can replace: a
full unpickle of it would run whatever code it names. Loading it safely needs every part of
the state in plain types, the random number generators' states included (torch's are byte
tensors already; numpy's and Python's become lists here).
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TrainingError, first_line
from ..fileio import atomic_path

REQUIRED = ("model", "optimizer", "epoch", "step", "config", "data_key", "history", "lr",
            "baseline")


def rng_state() -> dict[str, Any]:
    """The state of every random number generator a run may draw from, in plain types."""
    import torch

    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    cuda = (torch.cuda.get_rng_state_all()
            if torch.cuda.is_available() and torch.cuda.is_initialized() else [])
    return {"torch": torch.get_rng_state(), "cuda": list(cuda),
            "numpy": {"name": str(name), "keys": [int(k) for k in keys], "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": {"version": int(version), "state": [int(v) for v in internal],
                       "gauss": gauss_next}}


def restore_rng(state: dict[str, Any]) -> None:
    """Put back what :func:`rng_state` saved (CUDA's only on as many devices as it had)."""
    import torch

    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all([t.cpu() for t in cuda])
    if "numpy" in state:
        n = state["numpy"]
        np.random.set_state((n["name"], np.asarray(n["keys"], dtype=np.uint32), n["pos"],
                             n["has_gauss"], n["gauss"]))
    if "python" in state:
        p = state["python"]
        random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (plain types only) whole or not at all."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, device: str) -> dict[str, Any]:
    """A checkpoint's state, loaded without running any code it might hold; one line naming
    the file when it cannot be had that way."""
    import torch

    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:
        raise TrainingError(
            f"cannot resume from {path}: it holds Python objects other than tensors and plain "
            "values, which loading could run as code, so it was not loaded (a file written by "
            "an older version or by another program, or one planted there: do not trust it); "
            f"start a fresh run with another --out, or delete {path.parent} to start over"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise TrainingError(f"cannot resume from {path}: not a readable training checkpoint "
                            f"({first_line(exc)})") from None
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED) or not (
            "rng" in state or "torch_rng" in state):
        raise TrainingError(f"cannot resume from {path}: not a training checkpoint of "
                            "retrieval train")
    return state
