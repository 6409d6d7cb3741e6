"""The options every method has for what it reads: ``--dataset`` (the format) and ``--fold``.

Each method's ``Config`` derives from :class:`DataOptions`, so the options, their help and their checks are one
declaration. They do not describe the trained model: ``eval`` reads a test set with the dataset the model was
trained on unless ``--dataset`` says otherwise.
"""
from dataclasses import dataclass
from typing import Optional

from common.core.config import EVAL, TRAIN, option

from .readers import FORMATS


@dataclass
class DataOptions:
    """Options of what a method reads (inherited by every method's Config)."""

    dataset: str = option("mvtec", "dataset format: " + ", ".join(FORMATS) + " (see README, Datasets)",
                          modes=(TRAIN, EVAL), choices=tuple(FORMATS))
    fold: Optional[int] = option(None, "fold of a format with folds (kolektor: 0, 1 or 2)", modes=(TRAIN, EVAL))
