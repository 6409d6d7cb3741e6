"""The one item shape every dataset reader gives, and the description of a dataset format.

A reader lists a class's images as :class:`Sample` records (no pixels are read when listing): the training images,
the validation images where the format has them (MVTec LOCO's ``validation/good``), and the test images with their
label, defect type and ground-truth mask file(s). The pixels are read by :func:`open_sample_image` and
:func:`open_sample_mask`, which every method uses, so a reader never decodes an image itself except for formats
stored as arrays (CIFAR-10, MNIST), whose samples carry their pixels in ``pixels``.
"""
import os
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
from PIL import Image

from common.core.errors import UserError

from .images import open_image, open_mask, to_rgb

GOOD = "good"
# how a mask file marks a defect
MASK_AS_STORED = "as_stored"   # an 8-bit mask used as stored (MVTec AD: 0 / 255); methods resize and threshold it
MASK_NONZERO = "nonzero"       # any value above 0 is a defect (VisA, Kolektor, MVTec LOCO channels, BTech)
MASK_RULES = (MASK_AS_STORED, MASK_NONZERO)


@dataclass(frozen=True)
class Sample:
    """One image of a class.

    ``path``: the image file (for an in-memory image, a descriptive pseudo-path such as
    ``.../cifar-10-batches-py/test_batch/00042``); ``label``: 0 normal, 1 anomalous; ``defect_type``: ``good`` for
    normal images, else the format's defect folder or type (``logical_anomalies``, ``bad``, ...); ``mask_paths``:
    the ground-truth mask files of an anomalous image (several for MVTec LOCO, one per annotated defect, whose union is
    the defect), empty when the format or the image has none; ``mask_rule``: :data:`MASK_AS_STORED` or
    :data:`MASK_NONZERO`; ``name``: unique within the class and usable as a relative file path for outputs (default
    ``DEFECT_TYPE/FILE_STEM``); ``pixels``: the uint8 image (H, W) or (H, W, 3) when it is held in memory.
    """

    path: str
    label: int
    defect_type: str
    mask_paths: tuple = ()
    mask_rule: str = MASK_AS_STORED
    name: Optional[str] = None
    pixels: Optional[np.ndarray] = field(default=None, compare=False, hash=False, repr=False)

    def __post_init__(self):
        if self.mask_rule not in MASK_RULES:
            raise ValueError(f"mask_rule must be one of {MASK_RULES}, got {self.mask_rule!r}")
        object.__setattr__(self, "mask_paths", tuple(self.mask_paths))
        if self.name is None:
            stem = os.path.splitext(os.path.basename(self.path))[0]
            object.__setattr__(self, "name", f"{self.defect_type}/{stem}")

    @property
    def mask_path(self):
        """The first mask file, or None (the formats with one mask per image)."""
        return self.mask_paths[0] if self.mask_paths else None


@dataclass(frozen=True)
class DatasetFormat:
    """A dataset format as its owners publish it, and the functions that read it.

    ``name`` is the ``--dataset`` value. ``classes`` are the published class (object, category) names, used for
    ``--cls all`` when the root holds them and for "did you mean" suggestions; ``groups`` maps group names
    (``all`` and e.g. ``textures``) to classes. ``folds`` lists the ``--fold`` values of a format with folds
    (KolektorSDD), else is empty. ``kind`` is ``industrial`` (normal training images, test images with masks) or
    ``one_class`` (a labelled classification set: one class is normal, the others anomalous).

    The functions take ``(root, cls, fold)`` (``fold`` None for formats without folds) and return lists of
    :class:`Sample` in a deterministic order; ``list_classes(root)`` returns the classes present under ``root``.
    ``validation`` returns [] for formats without a validation split. A missing or malformed file is a
    :class:`~common.core.errors.UserError` whose one line names the file.
    """

    name: str
    description: str
    classes: tuple
    list_classes: Callable
    train: Callable
    test: Callable
    validation: Optional[Callable] = None
    groups: dict = field(default_factory=dict)
    folds: tuple = ()
    kind: str = "industrial"

    def validation_samples(self, root, cls, fold=None):
        return list(self.validation(root, cls, fold)) if self.validation else []


def sample_size(sample):
    """(width, height) of ``sample``'s image, from its file header or its in-memory pixels."""
    from .images import image_size

    if sample.pixels is not None:
        return int(sample.pixels.shape[1]), int(sample.pixels.shape[0])
    return image_size(sample.path)


def open_sample_image(sample):
    """The RGB PIL image of ``sample`` (decoded from its file, or from ``pixels``); errors name the file."""
    if sample.pixels is None:
        return open_image(sample.path)
    pixels = np.asarray(sample.pixels)
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
        raise UserError(f"{sample.path}: in-memory pixels must be uint8 (H, W) or (H, W, 3), got {pixels.dtype} "
                        f"{pixels.shape}")
    return to_rgb(Image.fromarray(pixels))


def open_sample_mask(sample, image_size=None):
    """The ground truth of ``sample`` as an 8-bit PIL image (mode ``L``), or None when it has no mask file.

    One :data:`MASK_AS_STORED` file is returned as stored (converted to ``L``). Otherwise every file is read, must
    have the image's ``image_size`` (width, height) when given, and the union of their non-zero pixels is returned
    as 0 / 255 (so the methods' resize-then-threshold rules see the same 0 / 255 masks as MVTec AD's).
    """
    if not sample.mask_paths:
        return None
    if sample.mask_rule == MASK_AS_STORED and len(sample.mask_paths) == 1:
        return open_mask(sample.mask_paths[0], image_size)
    union = None
    for path in sample.mask_paths:
        values = np.asarray(open_mask(path, image_size)) > 0
        union = values if union is None else union | values
    return Image.fromarray((union * 255).astype(np.uint8), mode="L")
