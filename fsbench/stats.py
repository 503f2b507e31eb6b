"""Streaming first and second moments of feature vectors.

FID needs the mean and covariance of tens of thousands of 2048-d features. Holding them all
costs gigabytes; accumulating sums of squares in float32 loses the covariance to
cancellation. `RunningMoments` keeps, in float64, the count, the mean and the centred
scatter matrix, and merges each batch with Chan et al.'s pairwise update, so the result
equals ``np.mean(X, 0)`` and ``np.cov(X, rowvar=False)`` (ddof = 1) of all rows seen, to
rounding, whatever the batching.
"""

from __future__ import annotations

import numpy as np

__all__ = ["RunningMoments"]


class RunningMoments:
    """Running mean and covariance of rows of dimension `dim`, fed batch by batch."""

    def __init__(self, dim: int) -> None:
        self.dim = int(dim)
        self.n = 0
        self.mean = np.zeros(self.dim, dtype=np.float64)
        self.scatter = np.zeros((self.dim, self.dim), dtype=np.float64)  # sum of centred outer products

    def update(self, batch: np.ndarray) -> RunningMoments:
        """Add rows (N, dim); returns self so calls chain."""
        x = np.asarray(batch, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected rows of dimension {self.dim}, got shape {x.shape}")
        nb = x.shape[0]
        if nb == 0:
            return self
        mb = x.mean(axis=0)
        xc = x - mb
        sb = xc.T @ xc  # (dim, dim) scatter of this batch about its own mean
        self._merge(nb, mb, sb)
        return self

    def merge(self, other: RunningMoments) -> RunningMoments:
        """Fold in moments gathered elsewhere (another worker, another shard)."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge moments of dimension {other.dim} into {self.dim}")
        if other.n:
            self._merge(other.n, other.mean, other.scatter)
        return self

    def _merge(self, nb: int, mb: np.ndarray, sb: np.ndarray) -> None:
        na = self.n
        n = na + nb
        delta = mb - self.mean
        # Chan et al. (1979): the between-chunk term corrects for the two means differing.
        self.scatter += sb + np.outer(delta, delta) * (na * nb / n)
        self.mean += delta * (nb / n)
        self.n = n

    @property
    def cov(self) -> np.ndarray:
        """Sample covariance with N - 1 in the denominator, as np.cov; needs N >= 2."""
        if self.n < 2:
            raise ValueError(f"a covariance needs at least 2 samples, got {self.n}")
        return self.scatter / (self.n - 1)
