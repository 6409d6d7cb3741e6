"""The one-class novelty protocol of KDAD / MKD and RD4AD (CIFAR-10, MNIST, Fashion-MNIST, Retinal-OCT).

One class of a labelled classification set is the *normal* class. Training uses the training images of that
class only; the test set is the whole official test split, with label 0 for images of the normal class and 1 for
every other class (Niousha12/Knowledge_Distillation_AD ``dataloader.py`` and ``test_functions.detection_test``;
hq-deng/RD4AD ``dataset.py::load_data`` and ``test.py::detection``).

This module holds what the readers of those sets share:

- :func:`normal_class`, :func:`class_index`, :func:`normal_classes`: the ``--cls`` / ``--normal_class`` value (a
  class index as in the official configs, or a class name) -> the class name(s);
- :func:`protocol_label`: the label and defect type of an image of a given class;
- :class:`ArraySplit` and :func:`one_class_samples`: a split stored as one uint8 array (CIFAR-10, MNIST) -> the
  :class:`~common.data.samples.Sample` lists, each sample's pixels a view into the array;
- :func:`detection_auroc`: the detection AUROC as the KDAD code computes it.
"""
import os
import re
from dataclasses import dataclass

import numpy as np

from common.core.errors import UserError, suggest

from ..samples import GOOD, Sample


# ----------------------------------------------------------------------------------------------------------------
# Class names and indices
# ----------------------------------------------------------------------------------------------------------------
def class_names(fmt, root=None):
    """The classes of ``fmt`` in label order: read from ``root`` when given (``fmt.list_classes``), else the
    published list ``fmt.classes``."""
    return tuple(fmt.list_classes(root)) if root is not None else tuple(fmt.classes)


def _loose(name):
    # "T-shirt/top", "t-shirt_top" and "TSHIRT TOP" are the same class; "Normal" is NORMAL
    return re.sub(r"[^0-9a-z]", "", str(name).lower())


def resolve_class(classes, value, dataset):
    """``value`` (an index into ``classes`` as int or digits, or a class name in any case and punctuation) -> the
    class name as spelled in ``classes``; anything else is a one-line :class:`UserError` listing the valid ones."""
    classes = tuple(classes)
    text = str(value).strip()
    if text in classes:  # exact names first: MNIST's classes are the digits, so "3" is both name and index
        return text
    if re.fullmatch(r"[+-]?\d+", text):  # an index (never matched loosely: "-1" is not class "1")
        index = int(text)
        if 0 <= index < len(classes):
            return classes[index]
    else:
        matches = [name for name in classes if _loose(name) == _loose(text)]
        if len(matches) == 1:
            return matches[0]
    if classes == tuple(str(index) for index in range(len(classes))):  # MNIST: the names are the indices
        choices = ", ".join(classes)
    else:
        choices = ", ".join(f"{index}={name}" for index, name in enumerate(classes))
    raise UserError(f"unknown {dataset} class '{text}'{suggest(text, classes)}; "
                    f"choose an index or a name: {choices}")


def normal_class(fmt, value, root=None):
    """The normal class named or indexed by ``value`` (``--cls`` / ``--normal_class``) -> its class name."""
    return resolve_class(class_names(fmt, root), value, fmt.name)


def class_index(fmt, value, root=None):
    """The label index of the class named or indexed by ``value`` (OCT ``NORMAL`` -> 3, as ImageFolder numbers it)."""
    classes = class_names(fmt, root)
    return classes.index(resolve_class(classes, value, fmt.name))


def normal_classes(fmt, spec, root=None):
    """A ``--cls`` value -> class names: ``all`` (every class, in label order), one class, or a comma list."""
    classes = class_names(fmt, root)
    out = []
    for part in [s.strip() for s in str(spec).split(",") if s.strip()]:
        out.extend(classes if part == "all" else [resolve_class(classes, part, fmt.name)])
    if not out:
        raise UserError(f"no {fmt.name} classes selected by '{spec}'")
    return list(dict.fromkeys(out))


def protocol_label(class_name, normal):
    """(label, defect_type) of an image of ``class_name`` when ``normal`` is the normal class: (0, ``good``) for the
    normal class, else (1, the image's own class name) so that results can be broken down by class."""
    return (0, GOOD) if class_name == normal else (1, class_name)


# ----------------------------------------------------------------------------------------------------------------
# Splits stored as arrays (CIFAR-10, MNIST, Fashion-MNIST)
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ArraySplit:
    """One official split held in memory.

    ``images``: uint8 (N, H, W) or (N, H, W, 3), read-only; ``labels``: int64 (N,) class indices into ``classes``;
    ``sources``: ((file, count), ...) the files the rows come from, in row order (CIFAR-10's five training batches;
    one file otherwise). A row's pseudo-path is ``FILE/ROW`` with ROW its position inside that file.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: tuple
    sources: tuple

    def row_paths(self, rows):
        """Pseudo-paths ``FILE/NNNNN`` of the split's ``rows`` (positions in the whole split)."""
        starts = np.cumsum([0] + [count for _, count in self.sources])
        which = np.searchsorted(starts, rows, side="right") - 1
        return [os.path.join(self.sources[w][0], f"{row - starts[w]:05d}") for row, w in zip(rows, which)]


def one_class_samples(split, normal, train):
    """The samples of ``split`` for normal class ``normal`` (a name in ``split.classes``).

    ``train``: only the rows of the normal class, label 0, defect type ``good``. Otherwise (test): every row, with
    :func:`protocol_label`. Rows keep the split's order (the official datasets' order); ``name`` is
    ``DEFECT_TYPE/NNNNN`` with NNNNN the row's position in the split (torchvision's index), unique in the split;
    ``pixels`` is a view into ``split.images`` (no copy).
    """
    normal_index = split.classes.index(normal)
    rows = np.flatnonzero(split.labels == normal_index) if train else np.arange(len(split.labels))
    paths = split.row_paths(rows)
    labels = split.labels.tolist()
    samples = []
    for row, path in zip(rows.tolist(), paths):
        label, defect = protocol_label(split.classes[labels[row]], normal)
        samples.append(Sample(path, label, defect, name=f"{defect}/{row:05d}", pixels=split.images[row]))
    return samples


def file_stamp(paths):
    """(path, size, modification time) of each file: the key under which a decoded split is cached, so a file
    replaced on disk is read again."""
    stamp = []
    for path in paths:
        info = os.stat(path)
        stamp.append((os.path.abspath(path), info.st_size, info.st_mtime_ns))
    return tuple(stamp)


def frozen(array):
    """``array`` made read-only: the cached arrays are shared by every sample and every call."""
    array.flags.writeable = False
    return array


def missing_file(what, expected, source, download=None, root=None):
    """The one-line error for a dataset file that is not where the reader looks; ``download``: the dataset's name in
    :mod:`common.data.download` when Paddle can fetch it into ``root``."""
    way_out = (f"put it there, or download it (needs internet): python -m common.download_dataset {download} {root}"
               if download else "put it there")
    return UserError(f"{what} not found: {expected} (it comes from {source}); {way_out}")
