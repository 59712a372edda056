"""Defaults that suit the model a run starts from: the learning rate by a range test, and when
to stop, by held-out recall.

* Learning rate (when none is given): a short range test on the first batches (Smith, "Cyclical
  Learning Rates", 2017; the fast.ai "LR finder"): the rate grows geometrically from 1e-7 to 1
  over :data:`RANGE_STEPS` steps until the smoothed loss is four times its minimum; the rate
  chosen is a tenth of the one at the smoothed minimum. The model, optimiser and random state
  are restored afterwards, so the test leaves no trace in the run. A large pretrained model
  gets a small rate and a small model trained from scratch a large one, without a rule of
  thumb per size.
* Early stopping: held-out recall (the mean of text-to-image and image-to-text recall@1/5/10)
  is measured before training and after every epoch; a run stops when it has not improved by
  :data:`MIN_GAIN` for :data:`PATIENCE` epochs, and the model folder holds the best epoch.
* Too few held-out images to judge: below :data:`MIN_HELD_OUT`, a random ranking already
  scores above 0.18 (:func:`chance_recall`: recall@10 among 10 images or fewer is 1 whatever
  the model) and one image moves recall@1 by more than 0.03, six times :data:`MIN_GAIN`, so
  "before" and "after" cannot tell a better model from a worse one; the run says so.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

from .model import RECALL_KS

RANGE_STEPS = 48
RANGE_START, RANGE_END = 1e-7, 1.0
LR_BOUNDS = (1e-6, 1e-2)
PATIENCE = 2
MIN_GAIN = 0.005
MIN_HELD_OUT = 30


def chance_recall(n: int, ks: Sequence[int] = RECALL_KS) -> float:
    """The held-out recall score (mean recall@k) of a random ranking of ``n`` images, one
    caption each."""
    return sum(min(k, n) / n for k in ks) / len(ks) if n else 0.0


def recall_score(metrics: dict[str, float] | None) -> float | None:
    """One number for held-out recall: the mean of the recall@k metrics."""
    values = [v for k, v in (metrics or {}).items() if "_r@" in k]
    return sum(values) / len(values) if values else None


def best_epoch(history: Sequence[dict[str, Any]]) -> int | None:
    """The epoch (1-based) with the best held-out recall, the first of equals."""
    scored = [(s, int(e["epoch"])) for e in history if (s := recall_score(e)) is not None]
    if not scored:
        return None
    top = max(s for s, _ in scored)
    return min(n for s, n in scored if s >= top - 1e-12)


def should_stop(history: Sequence[dict[str, Any]]) -> bool:
    """No gain of :data:`MIN_GAIN` in recall over the best epoch before, for :data:`PATIENCE`
    epochs (the first epoch is never judged: warm-up and a few steps say little)."""
    scores = [recall_score(e) for e in history]
    if len(scores) <= PATIENCE or any(s is None for s in scores):
        return False
    before = scores[:-PATIENCE]
    best_before = max(s for s in before if s is not None)
    return all(s is not None and s < best_before + MIN_GAIN for s in scores[-PATIENCE:])


def range_test(model: Any, optimizer: Any, step: Callable[[int], float],
               steps: int = RANGE_STEPS) -> tuple[float, list[tuple[float, float]]]:
    """(learning rate, [(rate, loss)] tried). ``step(i)`` trains on batch ``i`` at the rate
    set on the optimiser and returns the loss; the model and optimiser are restored after."""
    import torch

    saved_model = copy.deepcopy(model.state_dict())
    saved_optimizer = copy.deepcopy(optimizer.state_dict())
    rng = torch.get_rng_state()
    tried: list[tuple[float, float]] = []
    smooth, best = 0.0, math.inf
    try:
        for i in range(steps):
            lr = RANGE_START * (RANGE_END / RANGE_START) ** (i / max(1, steps - 1))
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = step(i)
            if not math.isfinite(loss):
                break
            smooth = 0.7 * smooth + 0.3 * loss
            value = smooth / (1 - 0.7 ** (i + 1))  # bias-corrected moving average
            tried.append((lr, value))
            best = min(best, value)
            if i > 4 and value > 4 * best:
                break
    finally:
        model.load_state_dict(saved_model)
        optimizer.load_state_dict(saved_optimizer)
        torch.set_rng_state(rng)
    return choose(tried), tried


def choose(tried: Sequence[tuple[float, float]]) -> float:
    """A tenth of the rate at the smoothed loss minimum, within :data:`LR_BOUNDS`."""
    if not tried:
        return LR_BOUNDS[0]
    at_min = min(tried, key=lambda t: t[1])[0]
    return min(LR_BOUNDS[1], max(LR_BOUNDS[0], at_min / 10))
