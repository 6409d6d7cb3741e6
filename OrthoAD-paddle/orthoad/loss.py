"""The Gaussian fit, OrthoAD/PaDiM's "training objective": per-position statistics accumulated batch by batch, and
the Cholesky precision factor.

Fitting never holds the training set: :class:`StreamingGaussian` keeps, for each of the P = H·W positions, the
count, the mean (k) and the centred scatter matrix M2 = Σ (z − μ)(z − μ)ᵀ (k × k), and merges each batch with
Chan et al.'s parallel update (numerically stable, so float32 accumulation is accurate). Memory is one
(P, k, k) buffer whatever the number of images; the batch scatter is formed in float64, in chunks of positions, by
one GEMM per position, and rounded once into the buffer.

:meth:`StreamingGaussian.finalize` turns the buffer into the precision factor A of every position, in place and in
chunks: C = M2 / N (the official OrthoAD estimator; N − 1 with ``unbiased=True``) + eps·I, C = L Lᵀ (Cholesky),
A = L⁻¹. Then the precision is P = C⁻¹ = Aᵀ A and the squared Mahalanobis distance is ‖A (z − μ)‖².

Speed: the matrices are small, so NumPy/SciPy's BLAS runs on one thread here (:func:`single_threaded_blas`); with
its default two OpenBLAS threads on 2 cores shared with Paddle, the same work took 5-30x longer, erratically. For
WRN50 k=300 (4096 positions) a merge of 32 images takes about 1.6 s and the finalisation about 10 s.
"""
import numpy as np
from scipy.linalg import lapack
from threadpoolctl import threadpool_limits

from common.core.errors import UserError

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
        batch_mean = z.mean(axis=0, dtype=np.float64).T                   # (P, k)
        delta = batch_mean - self.mean
        total = self.count + batch
        # Chan's merge adds count·batch/total · δδᵀ to the scatter: a rank-one term, so it rides along as one more
        # column of the centred block and the same GEMM computes it (a separate (m, k, k) outer product cost
        # as much as the GEMM itself).
        columns = batch + 1 if self.count else batch
        correction = np.sqrt(self.count * batch / total) * delta
        with single_threaded_blas():
            for start in range(0, self.positions, self.chunk):
                stop = min(start + self.chunk, self.positions)
                # (m, k, columns), C-contiguous: one plain GEMM per position below
                block = np.empty((stop - start, self.k, columns))
                block[:, :, :batch] = z[:, :, start:stop].transpose(2, 1, 0)
                block[:, :, :batch] -= batch_mean[start:stop, :, None]
                if self.count:
                    block[:, :, batch] = correction[start:stop]
                self.scatter[start:stop] += np.matmul(block, block.transpose(0, 2, 1))  # float32: rounded once
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


def single_threaded_blas():
    """Context that runs NumPy/SciPy's BLAS and LAPACK on one thread (Paddle's own OpenMP pool is untouched).

    NumPy's OpenBLAS is loaded before Paddle sets ``OMP_NUM_THREADS=1`` and starts one thread per core. Its threads
    busy-wait, and on cores shared with Paddle's thread pool or other processes they collapse: measured in a
    process running Paddle on 2 shared cores, one chunk of the scatter update took 0.5-2 s with two threads against
    0.04-0.08 s with one, and one chunk of 256 Cholesky factorisations 2.5-19 s against 0.6-1.4 s. The matrices
    (k × k per position, rank-B updates) are too small for a second thread to pay off.
    """
    return threadpool_limits(limits=1, user_api="blas")


def precision_factor(covariance):
    """A = L⁻¹ for C = L Lᵀ, for a stack (M, k, k): C⁻¹ = Aᵀ A, lower triangular, float64.

    LAPACK's Cholesky (``dpotrf``) and triangular inverse (``dtrtri``), one matrix at a time on one BLAS thread
    (:func:`single_threaded_blas`). For 256 matrices of 300 × 300, in a process running Paddle on 2 shared cores:
    0.4-0.6 s, against 0.6-1.4 s for NumPy's batched Cholesky and one ``solve_triangular`` per matrix (2.5-19 s
    with NumPy's default two threads), 1.6-2.1 s for NumPy's batched ``inv`` of L, and 1.5-1.7 s / 6-7 s for
    Paddle's batched ``triangular_solve`` / ``inv``. All agree to 1e-13 (A L = I, Aᵀ A = C⁻¹).
    """
    covariance = np.asarray(covariance, dtype=np.float64)
    factor = np.empty_like(covariance)
    with single_threaded_blas():
        for index, matrix in enumerate(covariance):
            lower, info = lapack.dpotrf(matrix, lower=1, clean=1)   # clean=1: zero upper triangle
            if info:
                raise UserError("covariance is not positive definite (increase --eps)")
            factor[index], info = lapack.dtrtri(lower, lower=1)
            if info:
                raise UserError("covariance is not positive definite (increase --eps)")
    return factor
