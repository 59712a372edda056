"""Synthetic data regimes for the index benchmarks: base vectors and two kinds of queries.

A synthetic data set is a hypothesis about real embeddings, and tight clusters are the one
that flatters an inverted file most. Three regimes, all L2-normalised, each generated a chunk
at a time from a seed (so 10M vectors can be written to a memory-mapped file):

* ``tight``: the generator ``benchmarks/ann.py`` always used: sqrt(n) random centres and
  isotropic noise of norm 0.5 around them (nearest neighbours at cosine ~0.85, clusters that
  barely touch);
* ``overlap``: overlapping soft clusters on a curved manifold. A latent space of
  ``LATENT_DIM`` (32) dimensions whose variances fall as a power law (1/i); sqrt(n) cluster
  centres drawn from it, and points spread around them as widely as the centres spread, so
  clusters overlap; the latent points are mapped into the ambient space by a fixed random
  linear map plus a smooth non-linear one (random sinusoids of the latent coordinates, which
  bends the manifold), shifted by a shared mean direction (the "cone" real CLIP embeddings sit
  in) and given a little isotropic ambient noise;
* ``uniform``: nearly uniform on the sphere: Gaussian directions whose variances fall slowly
  (1/sqrt(i)), so the data fill about 300 of 512 dimensions (the worst case for every index).

Queries of two kinds for each: ``image`` queries drawn like the base vectors (fresh points),
and ``text`` queries made the way ``benchmarks/ann.py`` made its cross-modal ones, for every
regime: 0.3 x a fresh point + 0.95 x one shared "modality gap" direction + a little noise,
normalised (a text query's best match has cosine ~0.3, as CLIP's texts to its images).

The ``demo`` set (real model vectors) is made by :mod:`benchmarks.demo_vectors`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

REGIMES = ("tight", "overlap", "uniform")
LATENT_DIM = 32
CURVE_DIM = 32


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@dataclass
class Regime:
    """One data distribution: ``points(m, rng)`` draws base-like vectors, ``text(m, rng)``
    cross-modal-like queries."""

    name: str
    dim: int
    points: Callable[[int, np.random.Generator], np.ndarray]
    gap: np.ndarray

    def text(self, m: int, rng: np.random.Generator) -> np.ndarray:
        q = 0.3 * self.points(m, rng) + 0.95 * self.gap
        q += rng.standard_normal(q.shape, dtype=np.float32) * np.float32(0.3 / np.sqrt(self.dim))
        return _unit(q)

    def queries(self, kind: str, m: int, rng: np.random.Generator) -> np.ndarray:
        return self.points(m, rng) if kind == "image" else self.text(m, rng)


def _tight(n: int, dim: int, rng: np.random.Generator) -> Callable[..., np.ndarray]:
    centres = _unit(rng.standard_normal((max(16, int(np.sqrt(n))), dim), dtype=np.float32))
    noise = np.float32(0.5 / np.sqrt(dim))

    def points(m: int, r: np.random.Generator) -> np.ndarray:
        x = centres[r.integers(0, len(centres), m)]
        return _unit(x + r.standard_normal((m, dim), dtype=np.float32) * noise)
    return points


def _overlap(n: int, dim: int, rng: np.random.Generator) -> Callable[..., np.ndarray]:
    scale = (np.arange(1, LATENT_DIM + 1) ** -0.5).astype(np.float32)  # variances ~ 1/i
    centres = rng.standard_normal((max(16, int(np.sqrt(n))), LATENT_DIM),
                                  dtype=np.float32) * scale
    linear = np.linalg.qr(rng.standard_normal((dim, LATENT_DIM)))[0].T.astype(np.float32)
    bend = np.linalg.qr(rng.standard_normal((dim, CURVE_DIM)))[0].T.astype(np.float32)
    freq = rng.standard_normal((LATENT_DIM, CURVE_DIM), dtype=np.float32) * 1.5
    phase = rng.uniform(0, 2 * np.pi, CURVE_DIM).astype(np.float32)
    mean = _unit(rng.standard_normal(dim, dtype=np.float32))

    def points(m: int, r: np.random.Generator) -> np.ndarray:
        z = centres[r.integers(0, len(centres), m)]
        z = z + r.standard_normal((m, LATENT_DIM), dtype=np.float32) * scale
        curve = np.sin(z @ freq + phase) * np.float32(0.35)
        x = z @ linear + curve @ bend + np.float32(2.0) * mean
        x += r.standard_normal((m, dim), dtype=np.float32) * np.float32(0.25 / np.sqrt(dim))
        return _unit(x)
    return points


def _uniform(n: int, dim: int, rng: np.random.Generator) -> Callable[..., np.ndarray]:
    scale = (np.arange(1, dim + 1) ** -0.25).astype(np.float32)  # variances ~ 1/sqrt(i)
    rotation = np.linalg.qr(rng.standard_normal((dim, dim)))[0].astype(np.float32)

    def points(m: int, r: np.random.Generator) -> np.ndarray:
        return _unit((r.standard_normal((m, dim), dtype=np.float32) * scale) @ rotation)
    return points


_MAKERS = {"tight": _tight, "overlap": _overlap, "uniform": _uniform}


def regime(name: str, n: int, dim: int, seed: int = 0) -> Regime:
    """The regime ``name`` for a base of ``n`` vectors of ``dim`` dimensions (the number of
    clusters follows n); the same seed gives the same distribution."""
    if name not in _MAKERS:
        raise ValueError(f"unknown regime {name!r}; expected one of {REGIMES}")
    rng = np.random.default_rng([seed, REGIMES.index(name)])
    points = _MAKERS[name](n, dim, rng)
    gap = _unit(rng.standard_normal(dim, dtype=np.float32))
    return Regime(name, dim, points, gap)


def base_vectors(reg: Regime, n: int, seed: int = 0, chunk: int = 100_000,
                 out: np.ndarray | None = None) -> np.ndarray:
    """``n`` base vectors, drawn a chunk at a time (into ``out`` when given, e.g. a memmap)."""
    out = np.empty((n, reg.dim), np.float32) if out is None else out
    for i, lo in enumerate(range(0, n, chunk)):
        hi = min(n, lo + chunk)
        out[lo:hi] = reg.points(hi - lo, np.random.default_rng([seed, 1, i]))
    return out
