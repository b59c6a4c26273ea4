"""DiffFake scoring primitives shared by the trainer (fit/eval) and the daemon (serving).

Pairs of embeddings of one identity are combined element-wise (default ``(a - b)**2``), each row
L2-normalised, and scored by a Gaussian mixture's log-likelihood (higher = more natural change =
more real; methods.md §4.3-4.4). The GMM is stored as plain arrays so serving needs no
scikit-learn: ``weights`` (K,), ``means`` (K, D), ``precisions_cholesky`` (K, D, D) exactly as
scikit-learn's ``GaussianMixture(covariance_type="full")`` holds them.
"""

from __future__ import annotations

import numpy as np

COMBINATIONS = ("abs", "diff", "sq", "cube")


def combine(a: np.ndarray, b: np.ndarray, mode: str = "sq") -> np.ndarray:
    """Combine (N, D) embedding pairs into (N, D) row-L2-normalised difference vectors."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    d = a - b
    if mode == "sq":
        x = d * d
    elif mode == "abs":
        x = np.abs(d)
    elif mode == "diff":
        x = d
    elif mode == "cube":
        x = d**3
    else:
        raise ValueError(f"unknown pair combination {mode!r} (expected one of {COMBINATIONS})")
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, 1e-12)


class GmmScorer:
    """Log-likelihood under a Gaussian mixture (same result as sklearn's score_samples).

    ``precisions_cholesky``: (k, d, d) for full covariances, or (k, d) for diagonal ones (sklearn's
    ``covariance_type='diag'`` layout: the square roots of the per-dimension precisions), which keeps a
    high-dimensional embedding's GMM small in the bundle (1280-d: 10 KB instead of 13 MB).
    """

    def __init__(self, weights: np.ndarray, means: np.ndarray, precisions_cholesky: np.ndarray):
        self.weights = np.asarray(weights, dtype=np.float64)
        self.means = np.asarray(means, dtype=np.float64)
        self.prec_chol = np.asarray(precisions_cholesky, dtype=np.float64)
        k, d = self.means.shape
        self.diagonal = self.prec_chol.shape == (k, d)
        if self.weights.shape != (k,) or (self.prec_chol.shape != (k, d, d) and not self.diagonal):
            raise ValueError("inconsistent GMM parameter shapes")
        self.dim = d
        # log det of the Cholesky factor of each precision matrix
        diag = self.prec_chol if self.diagonal else np.diagonal(self.prec_chol, axis1=1, axis2=2)
        self._log_det = np.sum(np.log(diag), axis=1)
        self._log_w = np.log(np.maximum(self.weights, 1e-300))

    @classmethod
    def from_arrays(cls, g: dict[str, np.ndarray]) -> GmmScorer:
        return cls(g["weights"], g["means"], g["precisions_cholesky"])

    @classmethod
    def from_sklearn(cls, gmm) -> GmmScorer:
        if gmm.covariance_type not in ("full", "diag"):
            raise ValueError(f"only covariance_type 'full' or 'diag' mixtures are supported, got {gmm.covariance_type!r}")
        return cls(gmm.weights_, gmm.means_, gmm.precisions_cholesky_)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights, "means": self.means, "precisions_cholesky": self.prec_chol}

    def score_samples(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected (N, {self.dim}) vectors, got {x.shape}")
        log_prob = np.empty((x.shape[0], len(self.weights)))
        for k in range(len(self.weights)):
            y = (x - self.means[k]) * self.prec_chol[k] if self.diagonal else (x - self.means[k]) @ self.prec_chol[k]
            log_prob[:, k] = np.sum(y * y, axis=1)
        log_gauss = -0.5 * (self.dim * np.log(2 * np.pi) + log_prob) + self._log_det
        z = log_gauss + self._log_w
        m = z.max(axis=1, keepdims=True)
        return (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]
