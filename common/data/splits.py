"""Seeded train/validation splits of the good training images."""
import numpy as np

from common.core.errors import UserError


def random_split(samples, validation_fraction=0.1, seed=42):
    """Seeded random split: ``(train, validation)`` with ``int(fraction * n)`` validation images.

    EfficientAD holds out 10 % of the training images (the reference uses torch's ``random_split`` with seed 42,
    whose permutation cannot be reproduced without torch; this uses NumPy's ``default_rng(seed)``). At least one
    image stays on each side when there are two or more images.
    """
    samples = list(samples)
    n = len(samples)
    if n < 2:
        raise UserError(f"need at least 2 training images to hold out a validation split, got {n}")
    n_val = min(max(int(validation_fraction * n), 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    val_idx = set(order[:n_val].tolist())
    train = [s for i, s in enumerate(samples) if i not in val_idx]
    val = [s for i, s in enumerate(samples) if i in val_idx]
    return train, val


def calibration_split(samples, fraction, seed):
    """``(train, calibration)``: every sample for training and none held out when ``fraction`` is 0 (what the
    official codes do), else a seeded hold-out of ``fraction`` that calibrates the thresholds of predict/infer."""
    samples = list(samples)
    if not fraction:
        return samples, []
    return random_split(samples, validation_fraction=float(fraction), seed=int(seed))


def holdout_split(dataset, data_dir, cls, fold, fraction, seed):
    """``(train, validation)`` of a class for methods whose official code trains on every normal image: the
    format's own validation images when it has them (MVTec LOCO's ``validation/good``; every training image then
    trains), else a seeded hold-out of ``fraction`` of the training images (none when 0)."""
    from .readers import train_samples, validation_samples

    samples = train_samples(dataset, data_dir, cls, fold)
    validation = validation_samples(dataset, data_dir, cls, fold)
    if validation:
        return samples, validation
    return calibration_split(samples, fraction, seed)
