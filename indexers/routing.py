"""Telling query kinds apart, so each kind gets the search settings tuned for it.

A collection's image queries sit among its image vectors; its text queries sit across the
modality gap, along one shared direction. Tuning sees labelled samples of both kinds; a
:class:`Router` learns the direction between their means and where along it each kind lies.
A query is then given its kind's settings (say a short graph walk for an image, a scan of a
few inverted lists for a text) when its projection says clearly which kind it is, and the
settings that reach the target for every kind when it falls where the samples overlapped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

POOLED = ""  # the kind name of queries the router cannot place: settings good for every kind


@dataclass(frozen=True)
class Router:
    """Two query kinds along one direction: below ``low_below`` a query is ``low``, above
    ``high_above`` it is ``high``, in between it gets the pooled settings."""

    direction: np.ndarray
    low: str
    high: str
    low_below: float
    high_above: float

    @classmethod
    def fit(cls, queries: np.ndarray, labels: np.ndarray) -> Router | None:
        """The router of two labelled kinds; None for one kind or more than two.

        Two candidate directions: between the kinds' means, and the discriminant one (the
        same difference, whitened by the kinds' pooled covariance, a little shrunk): the
        second tells apart kinds whose means differ along directions the samples also vary
        in a lot (the demo model's images and captions: 5% of image queries placed by the
        means, 99.8% by the discriminant). Each is fitted on half the samples and scored on
        the other half; the one that places more held-out queries (a wrong placement
        counted as ten missed) is fitted on all of them."""
        kinds = sorted(set(labels.tolist()))
        if len(kinds) != 2:
            return None
        a, b = (np.asarray(queries[labels == kind], np.float64) for kind in kinds)
        if not np.linalg.norm(b.mean(0) - a.mean(0)):
            return None
        best, best_score = _mean_direction, -np.inf
        for direction in (_mean_direction, _discriminant):
            score = float(np.mean([cls._held_out(direction, a, b, i) for i in (0, 1)]))
            if score > best_score + 1e-9:
                best, best_score = direction, score
        return cls._along(best(a, b), a, b, kinds)

    @classmethod
    def _along(cls, w: np.ndarray, a: np.ndarray, b: np.ndarray, kinds: list[str]) -> Router:
        sa, sb = a @ w, b @ w
        if sa.max() < sb.min():  # apart: split halfway between them
            mid = float((sa.max() + sb.min()) / 2)
            return cls(w.astype(np.float32), kinds[0], kinds[1], mid, mid)
        # Overlapping: only queries beyond every sample of the other kind are placed.
        return cls(w.astype(np.float32), kinds[0], kinds[1], float(sb.min()), float(sa.max()))

    @classmethod
    def _held_out(cls, direction: Any, a: np.ndarray, b: np.ndarray, half: int) -> float:
        """Share of the held-out half placed right, less ten times the share placed wrong."""
        ta, tb = a[half::2], b[half::2]
        fit_a, fit_b = a[1 - half::2], b[1 - half::2]
        if not (len(ta) and len(tb) and len(fit_a) and len(fit_b)):
            return 0.0
        r = cls._along(direction(fit_a, fit_b), fit_a, fit_b, ["a", "b"])
        ka, kb = r.kinds(ta.astype(np.float32)), r.kinds(tb.astype(np.float32))
        right = (np.sum(ka == "a") + np.sum(kb == "b")) / (len(ka) + len(kb))
        wrong = (np.sum(ka == "b") + np.sum(kb == "a")) / (len(ka) + len(kb))
        return float(right - 10 * wrong)

    def kinds(self, queries: np.ndarray) -> np.ndarray:
        """The kind of each query row (POOLED where it cannot tell)."""
        s = queries @ self.direction
        out = np.full(len(queries), POOLED, dtype=object)
        out[s < self.low_below] = self.low
        out[s >= self.high_above] = self.high
        return out

    def kind_of(self, query: np.ndarray) -> str:
        """The kind of one query vector (POOLED where it cannot tell)."""
        s = float(query @ self.direction)
        return self.low if s < self.low_below else self.high if s >= self.high_above else POOLED

    def share_placed(self, queries: np.ndarray) -> float:
        return float(np.mean(self.kinds(queries) != POOLED)) if len(queries) else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"direction": [round(float(v), 7) for v in self.direction], "low": self.low,
                "high": self.high, "low_below": self.low_below, "high_above": self.high_above}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Router:
        return cls(np.asarray(d["direction"], np.float32), str(d["low"]), str(d["high"]),
                   float(d["low_below"]), float(d["high_above"]))

    def describe(self) -> str:
        if self.low_below == self.high_above:
            return f"{self.low} | {self.high}"
        return f"{self.low} | pooled | {self.high}"


# Shrinkage of the pooled covariance toward its mean variance: with a few hundred samples of
# each kind in hundreds of dimensions, the covariance alone is singular.
SHRINK = 0.01


def _mean_direction(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w = b.mean(0) - a.mean(0)
    return np.asarray(w / np.linalg.norm(w))


def _discriminant(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    c = np.cov(np.vstack([a - a.mean(0), b - b.mean(0)]).T).reshape(a.shape[1], a.shape[1])
    c += SHRINK * max(float(np.trace(c)) / len(c), 1e-12) * np.eye(len(c))
    w = np.linalg.solve(c, b.mean(0) - a.mean(0))
    norm = np.linalg.norm(w)
    return np.asarray(w / norm) if norm else _mean_direction(a, b)
