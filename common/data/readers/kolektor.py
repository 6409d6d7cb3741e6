"""KolektorSDD with the dataset authors' three folds (as OrthoAD uses them) and KolektorSDD2.

KolektorSDD (``FORMAT``, ``--dataset kolektor``)::

    ROOT/kos01 ... kos50/PartN.jpg            grayscale images whose heights differ slightly
    ROOT/kos01 ... kos50/PartN_label.bmp      mask, > 0 = defect; an all-zero mask = a defect-free image
    ROOT-training-splits/split.pyb            pickle [train_split, test_split, all]: train_split[f] and
                                              test_split[f] are the kos folders of fold f (0, 1, 2)

As in OrthoAD (``dataset.py``, ``negative_only`` for training), the training images of a fold are the parts of its
train folders whose mask is empty, and its test images are all parts of its test folders, labelled by their mask.
The fold file is looked for beside ROOT (OrthoAD's place), then in ``ROOT/KolektorSDD-training-splits/`` and
``ROOT`` itself; OrthoAD has no fallback without it, so its absence is an error.

KolektorSDD2 (``FORMAT_KSDD2``, ``--dataset kolektor2``)::

    ROOT/train/ID.png  ROOT/train/ID_GT.png   RGB image, mask (> 0 = defect)
    ROOT/test/ID.png   ROOT/test/ID_GT.png

Images are the files whose name ends in digits + ``.png`` (OrthoAD's rule), which leaves out the masks and the
duplicates ``10301 (copy).png`` / ``10301_GT (copy).png`` of the official train folder. Training images are the
train images with an empty mask, test images all of the test folder.

Each format is one class (``kolektor``, ``kolektor2``: the ``--dataset`` names, so the two never share an output
folder). Defective images have the defect type ``defect`` (OrthoAD's label name); names are
``DEFECT_TYPE/kosNN_PartN`` (part names repeat across kos folders) and ``DEFECT_TYPE/ID``.
"""
import builtins
import importlib
import os
import pickle
import re

import numpy as np

from common.core.errors import UserError, suggest
from common.data.images import open_mask
from common.data.samples import GOOD, MASK_NONZERO, DatasetFormat, Sample

from ._common import by_name, no_fold, require_folder

CLASS = "kolektor"
CLASS_KSDD2 = "kolektor2"
FOLDS = (0, 1, 2)
DEFECT = "defect"
SPLIT_FILE = "split.pyb"
SPLITS_FOLDER = "KolektorSDD-training-splits"
KSDD2_IMAGE = re.compile(r"[0-9]+\.png$")


def _check_class(cls, expected):
    if cls != expected:
        raise UserError(f"unknown class '{cls}'{suggest(cls, [expected])}: this format has one class, "
                        f"'{expected}'")


def _has_defect(mask_path):
    # OrthoAD reads the label as 8-bit grayscale ('L') and counts values > 0
    return bool(np.asarray(open_mask(mask_path)).any())


def _labelled(image, mask, name):
    """A sample labelled by its mask file: defective when any mask pixel is above 0."""
    if _has_defect(mask):
        return Sample(image, 1, DEFECT, (mask,), MASK_NONZERO, name=f"{DEFECT}/{name}")
    return Sample(image, 0, GOOD, mask_rule=MASK_NONZERO, name=f"{GOOD}/{name}")


# -- KolektorSDD ---------------------------------------------------------------------------------------------------
def split_file_candidates(root):
    """Where the fold file may be: beside ROOT (OrthoAD), in ``ROOT/KolektorSDD-training-splits``, in ROOT."""
    root = os.path.normpath(root)
    return [os.path.join(root + "-training-splits", SPLIT_FILE), os.path.join(root, SPLITS_FOLDER, SPLIT_FILE),
            os.path.join(root, SPLIT_FILE)]


class _SplitUnpickler(pickle.Unpickler):
    """Unpickles lists of folder names and nothing that could run code (a pickle can call any global)."""

    ALLOWED = frozenset({("builtins", "list"), ("builtins", "tuple"), ("builtins", "set"), ("builtins", "frozenset"),
               ("__builtin__", "list"), ("__builtin__", "tuple"), ("__builtin__", "set"),
               ("__builtin__", "frozenset"), ("_codecs", "encode"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar")})

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it holds a {module}.{name} object; only lists of folder names are read")
        if module == "__builtin__":
            return getattr(builtins, name)
        if module == "numpy.core.multiarray":  # NumPy 2 moved it (the old path still imports, with a warning)
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return getattr(importlib.import_module(module), name)


def _folder_lists(value, path, what):
    """``value`` as a list of folds, each a list of kos folder names."""
    if not isinstance(value, (list, tuple, np.ndarray)):
        raise UserError(f"{path}: {what} must be a list of folds, got {type(value).__name__}")
    folds = []
    for fold in value:
        if isinstance(fold, (str, bytes)) or not isinstance(fold, (list, tuple, set, frozenset, np.ndarray)) \
                or not all(isinstance(name, str) for name in fold):
            raise UserError(f"{path}: each fold of {what} must be a list of kos folder names")
        folds.append(sorted(str(name) for name in fold))
    return folds


def read_folds(root):
    """``(path, train_split, test_split)`` of the fold file: per fold, the sorted kos folder names."""
    candidates = split_file_candidates(root)
    path = next((p for p in candidates if os.path.isfile(p)), None)
    if path is None:
        raise UserError(f"KolektorSDD fold file not found: {candidates[0]} (the dataset authors' "
                        f"{SPLITS_FOLDER}/{SPLIT_FILE}; {candidates[1]} or {candidates[2]} are accepted too)")
    try:
        with open(path, "rb") as handle:
            content = _SplitUnpickler(handle).load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, ImportError,
            IndexError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read the fold file {path}: {exc}") from None
    if not isinstance(content, (list, tuple)) or len(content) != 3:
        raise UserError(f"{path}: expected a pickled list [train_split, test_split, all]")
    train_split = _folder_lists(content[0], path, "train_split")
    test_split = _folder_lists(content[1], path, "test_split")
    if len(train_split) != len(test_split):
        raise UserError(f"{path}: {len(train_split)} train folds but {len(test_split)} test folds")
    return path, train_split, test_split


def _fold_index(fold, count, path):
    if fold is None:
        raise UserError(f"the kolektor format needs a fold: {', '.join(str(f) for f in range(count))}")
    try:
        index = int(fold)
    except (TypeError, ValueError):
        index = -1
    if str(index) != str(fold).strip() or not 0 <= index < count:
        raise UserError(f"fold {fold!r} is not in {path} (folds 0..{count - 1})")
    return index


def list_classes(root):
    """``['kolektor']`` when ``root`` holds kos folders, else ``[]``."""
    require_folder(root, "data folder")
    found = any(d.startswith("kos") and os.path.isdir(os.path.join(root, d)) for d in os.listdir(root))
    return [CLASS] if found else []


def folder_samples(root, folder):
    """Every part of one kos folder, labelled by its ``PartN_label.bmp``."""
    path = os.path.join(root, folder)
    if not os.path.isdir(path):
        raise UserError(f"KolektorSDD folder not found: {path}")
    # OrthoAD globs '*.jpg'; the label is the image name without '.jpg' + '_label.bmp'
    images = sorted(f for f in os.listdir(path) if f.lower().endswith(".jpg") and not f.startswith("."))
    if not images:
        raise UserError(f"no .jpg parts in {path}")
    samples = []
    for image in images:
        stem = image[:-4]
        label = os.path.join(path, stem + "_label.bmp")
        if not os.path.isfile(label):
            raise UserError(f"label {label} not found for {os.path.join(path, image)}")
        samples.append(_labelled(os.path.join(path, image), label, f"{folder}_{stem}"))
    return samples


def _fold_samples(root, cls, fold, which):
    _check_class(cls, CLASS)
    require_folder(root, "data folder")
    path, train_split, test_split = read_folds(root)
    index = _fold_index(fold, len(train_split), path)
    folders = (train_split if which == "train" else test_split)[index]
    if not folders:
        raise UserError(f"{path}: fold {index} has no {which} folders")
    samples = [s for folder in folders for s in folder_samples(root, folder)]
    return by_name(samples, f"{root} fold {index}")


def labelled_train_samples(root, cls, fold=None):
    """Every part of the fold's train folders, labelled by its mask (OrthoAD selects the defect-free ones only after
    resizing the masks)."""
    return _fold_samples(root, cls, fold, "train")


def _defect_free(samples, where):
    """The samples whose mask is empty; none is the user's data problem, named by ``where``."""
    kept = [s for s in samples if s.label == 0]
    if not kept:
        raise UserError(f"no defect-free training images in {where}")
    return kept


def train_samples(root, cls, fold=None):
    """The defect-free parts (empty mask) of the fold's train folders."""
    return _defect_free(labelled_train_samples(root, cls, fold), f"the train folders of fold {fold} under {root}")


def test_samples(root, cls, fold=None):
    """Every part of the fold's test folders, labelled by its mask."""
    return _fold_samples(root, cls, fold, "test")


# -- KolektorSDD2 --------------------------------------------------------------------------------------------------
def list_classes_ksdd2(root):
    """``['kolektor2']`` when ``root`` holds ``train/`` or ``test/``, else ``[]``."""
    require_folder(root, "data folder")
    found = any(os.path.isdir(os.path.join(root, split)) for split in ("train", "test"))
    return [CLASS_KSDD2] if found else []


def _ksdd2_samples(root, cls, fold, split):
    _check_class(cls, CLASS_KSDD2)
    no_fold("kolektor2", fold)
    folder = require_folder(os.path.join(root, split), f"KolektorSDD2 {split} folder")
    images = sorted(f for f in os.listdir(folder) if KSDD2_IMAGE.search(f))
    if not images:
        raise UserError(f"no images (ID.png) in {folder}")
    samples = []
    for image in images:
        stem = image[:-4]
        mask = os.path.join(folder, stem + "_GT.png")
        if not os.path.isfile(mask):
            raise UserError(f"mask {mask} not found for {os.path.join(folder, image)}")
        samples.append(_labelled(os.path.join(folder, image), mask, stem))
    return by_name(samples, folder)


def labelled_train_samples_ksdd2(root, cls, fold=None):
    """Every train image, labelled by its mask (see :func:`labelled_train_samples`)."""
    return _ksdd2_samples(root, cls, fold, "train")


def train_samples_ksdd2(root, cls, fold=None):
    """The train images whose mask is empty."""
    return _defect_free(labelled_train_samples_ksdd2(root, cls, fold), os.path.join(root, "train"))


def test_samples_ksdd2(root, cls, fold=None):
    """Every test image, labelled by its mask."""
    return _ksdd2_samples(root, cls, fold, "test")


# every train image with its label, per --dataset (for OrthoAD's official selection after resizing)
LABELLED_TRAIN = {"kolektor": labelled_train_samples, "kolektor2": labelled_train_samples_ksdd2}


FORMAT = DatasetFormat(
    name="kolektor",
    description="KolektorSDD: kos01..kos50/PartN.jpg with PartN_label.bmp (defect where > 0), three folds from "
                "the authors' split.pyb (ROOT-training-splits/); train = defect-free parts of the fold's train "
                "folders, test = all parts of its test folders; one class 'kolektor'",
    classes=(CLASS,),
    list_classes=list_classes,
    train=train_samples,
    test=test_samples,
    groups={"all": (CLASS,)},
    folds=FOLDS,
)

FORMAT_KSDD2 = DatasetFormat(
    name="kolektor2",
    description="KolektorSDD2: train/ and test/ with ID.png and ID_GT.png (defect where > 0), '(copy)' duplicates "
                "ignored; train = defect-free train images, test = all test images; one class 'kolektor2'",
    classes=(CLASS_KSDD2,),
    list_classes=list_classes_ksdd2,
    train=train_samples_ksdd2,
    test=test_samples_ksdd2,
    groups={"all": (CLASS_KSDD2,)},
)
