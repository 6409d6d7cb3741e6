"""The Gaussian fit, OrthoAD/PaDiM's "training objective": per-position statistics accumulated batch by batch, and
the Cholesky precision factor.

Fitting never holds the training set: :class:`StreamingGaussian` keeps, for each of the P = H·W positions, the
count, the mean (k) and the centred scatter matrix M2 = Σ (z − μ)(z − μ)ᵀ (k × k), and merges each batch with
Chan et al.'s parallel update (numerically stable, so float32 accumulation is accurate). Memory is one
(P, k, k) buffer whatever the number of images; the batch scatter is formed in chunks of positions.

:meth:`StreamingGaussian.finalize` turns the buffer into the precision factor A of every position, in place and in
chunks: C = M2 / N (the official OrthoAD estimator; N − 1 with ``unbiased=True``) + eps·I, C = L Lᵀ (Cholesky),
A = L⁻¹. Then the precision is P = C⁻¹ = Aᵀ A and the squared Mahalanobis distance is ‖A (z − μ)‖².
"""
import numpy as np
from scipy.linalg import solve_triangular

from common.errors import UserError

FLOAT64_BUDGET_BYTES = 1 << 30  # "auto" accumulates in float64 when the (P, k, k) buffer stays under 1 GiB


def accumulator_dtype(positions, k, dtype="auto"):
    """``float64`` or ``float32``; ``auto`` picks float64 only when a float64 buffer fits in 1 GiB."""
    if dtype == "auto":
        return np.float64 if positions * k * k * 8 <= FLOAT64_BUDGET_BYTES else np.float32
    if dtype not in ("float32", "float64"):
        raise UserError(f"--stats_dtype must be auto, float32 or float64, got '{dtype}'")
    return np.dtype(dtype).type


class StreamingGaussian:
    """Running mean and scatter of k-dimensional features at ``positions`` locations.

    ``update(z)`` takes a batch ``z`` of shape (B, k, P) (or (B, k, H, W)); ``finalize()`` returns the mean
    (P, k) and the precision factor (P, k, k) as float32.
    """

    def __init__(self, positions, k, dtype="auto", chunk=256):
        self.positions, self.k, self.chunk = int(positions), int(k), int(chunk)
        self.dtype = accumulator_dtype(self.positions, self.k, dtype)
        self.count = 0
        self.mean = np.zeros((self.positions, self.k), dtype=np.float64)
        self.scatter = np.zeros((self.positions, self.k, self.k), dtype=self.dtype)

    @property
    def nbytes(self):
        return self.scatter.nbytes + self.mean.nbytes

    def update(self, z):
        """Merge a batch of features (B, k, P) or (B, k, H, W) into the statistics."""
        z = np.asarray(z)
        batch = z.shape[0]
        z = z.reshape(batch, self.k, -1)
        if z.shape[2] != self.positions:
            raise ValueError(f"expected {self.positions} positions, got {z.shape[2]}")
        if batch == 0:
            return
        z = np.ascontiguousarray(z.transpose(2, 0, 1), dtype=np.float64)  # (P, B, k)
        batch_mean = z.mean(axis=1)                                        # (P, k)
        delta = batch_mean - self.mean
        total = self.count + batch
        weight = self.count * batch / total
        for start in range(0, self.positions, self.chunk):
            stop = min(start + self.chunk, self.positions)
            centred = z[start:stop] - batch_mean[start:stop, None, :]
            update = np.matmul(centred.transpose(0, 2, 1), centred)
            if self.count:
                d = delta[start:stop]
                update += weight * (d[:, :, None] * d[:, None, :])
            self.scatter[start:stop] += update.astype(self.dtype, copy=False)
        self.mean += delta * (batch / total)
        self.count = total

    def covariance(self, unbiased=False):
        """The covariance (P, k, k) as float64 (a copy; for tests and small problems)."""
        return self.scatter.astype(np.float64) / self._divisor(unbiased)

    def _divisor(self, unbiased):
        if self.count < 1 or (unbiased and self.count < 2):
            raise UserError(f"cannot fit a Gaussian on {self.count} training image(s)"
                            + (" with the unbiased estimator (needs 2)" if unbiased else ""))
        return self.count - 1 if unbiased else self.count

    def finalize(self, eps=0.01, unbiased=False):
        """Return ``(mean (P, k) float32, precision factor A (P, k, k) float32)``; P = (C + eps·I)⁻¹ = AᵀA.

        The float32 accumulator is overwritten with A (no second (P, k, k) buffer); a float64 one is converted
        chunk by chunk into a new float32 array. The accumulator cannot be updated afterwards.
        """
        divisor = self._divisor(unbiased)
        out = self.scatter if self.dtype == np.float32 else np.empty(self.scatter.shape, np.float32)
        identity = eps * np.eye(self.k)
        for start in range(0, self.positions, self.chunk):
            stop = min(start + self.chunk, self.positions)
            covariance = self.scatter[start:stop].astype(np.float64) / divisor + identity
            out[start:stop] = precision_factor(covariance)
        mean = self.mean.astype(np.float32)
        self.scatter = None
        return mean, out


def precision_factor(covariance):
    """A = L⁻¹ for C = L Lᵀ, for a stack (M, k, k): C⁻¹ = Aᵀ A, lower triangular, float64.

    One triangular solve per matrix (SciPy); NumPy's batched ``solve``/``inv`` were erratic next to Paddle's
    thread pool (seconds instead of milliseconds per chunk).
    """
    try:
        lower = np.linalg.cholesky(covariance)
    except np.linalg.LinAlgError:
        raise UserError("covariance is not positive definite (increase --eps)") from None
    identity = np.eye(covariance.shape[-1])
    return np.stack([solve_triangular(matrix, identity, lower=True) for matrix in lower])
