"""Synthetic embeddings with the structure of real ones, and the measures the vector checks use.

Never i.i.d. random vectors: in high dimensions every random point is nearly equally far from
every other, no ANN index can find "the" nearest neighbours, and recall is meaningless (measured
here: recall@10 0.03-0.10 on 1536-dimensional random vectors). Real embeddings lie near a
low-dimensional set and cluster by topic; so do these: topic centres in a small latent space,
points scattered around them, projected to the configured dimension with a little full-rank
noise, normalised to unit length.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def clustered_vectors(
    count: int, dims: int, *, seed: int, topics: int = 40, latent_dims: int = 32
) -> np.ndarray:
    """`count` unit vectors of `dims` float32 components, from `topics` clusters in a
    `latent_dims`-dimensional subspace. Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    latent = min(latent_dims, dims)
    centres = rng.standard_normal((topics, latent))
    projection = rng.standard_normal((latent, dims)) / math.sqrt(latent)
    labels = rng.integers(0, topics, count)
    points = centres[labels] + 0.35 * rng.standard_normal((count, latent))
    vectors = points @ projection + 0.05 * rng.standard_normal((count, dims))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32)


def recall_at_k(
    approximate: Sequence[Sequence[object]], exact: Sequence[Sequence[object]], k: int
) -> float:
    """Mean over queries of |approximate top-k ∩ exact top-k| / k."""
    if not exact:
        return 0.0
    hits = [len(set(a[:k]) & set(e[:k])) / k for a, e in zip(approximate, exact, strict=True)]
    return sum(hits) / len(exact)


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by the nearest-rank method: a value that was observed."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]
