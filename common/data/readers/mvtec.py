"""MVTec AD, and any dataset laid out like it (custom classes, ``ground_truth`` optional).

Layout::

    ROOT/CLASS/train/good/*.png
    ROOT/CLASS/test/good/*.png
    ROOT/CLASS/test/DEFECT/*.png
    ROOT/CLASS/ground_truth/DEFECT/NAME_mask.png      (NAME.png is accepted too)

A custom dataset can also be given as separate folders (:func:`folder_samples`): a train folder of good images
(directly or in ``good/``), a test folder with ``good/`` and any defect folders, and an optional mask folder.
Without masks, pixel metrics are reported as not available. Order is sorted and deterministic (defect type, then
file name).
"""
import os

from common.core.errors import UserError, suggest

from ..images import IMAGE_EXTENSIONS, list_images
from ..samples import GOOD, DatasetFormat, Sample
from ._common import no_fold

TEXTURES = ("carpet", "grid", "leather", "tile", "wood")
OBJECTS = ("bottle", "cable", "capsule", "hazelnut", "metal_nut", "pill", "screw",
           "toothbrush", "transistor", "zipper")
ALL_CLASSES = tuple(sorted(TEXTURES + OBJECTS))
GROUPS = {"all": ALL_CLASSES, "textures": TEXTURES, "objects": OBJECTS}
# MVTec AD classes stored as single-channel images.
GRAYSCALE_CLASSES = ("grid", "screw", "zipper")


def available_classes(data_dir):
    """Class folders under ``data_dir`` (folders that contain ``train`` or ``test``)."""
    if not os.path.isdir(data_dir):
        raise UserError(f"data folder not found: {data_dir}")
    return sorted(d for d in os.listdir(data_dir)
                  if os.path.isdir(os.path.join(data_dir, d, "train"))
                  or os.path.isdir(os.path.join(data_dir, d, "test")))


def class_dir(data_dir, cls):
    """``data_dir/cls``, or ``data_dir`` itself when it already is that class folder."""
    candidate = os.path.join(data_dir, cls)
    if os.path.isdir(candidate):
        return candidate
    if os.path.basename(os.path.normpath(data_dir)) == cls and os.path.isdir(os.path.join(data_dir, "train")):
        return data_dir
    if not os.path.isdir(data_dir):
        raise UserError(f"data folder not found: {data_dir}")
    present = available_classes(data_dir)
    raise UserError(f"class folder not found: {candidate}{suggest(cls, present)}")


def train_samples(data_dir, cls):
    """Good training images of a class (``CLASS/train/good``, or images directly in ``CLASS/train``)."""
    root = os.path.join(class_dir(data_dir, cls), "train")
    return _good_folder_samples(root)


def test_samples(data_dir, cls):
    """Test images of a class with labels and masks (masks from ``CLASS/ground_truth`` when present)."""
    root = class_dir(data_dir, cls)
    mask_dir = os.path.join(root, "ground_truth")
    return folder_samples(os.path.join(root, "test"), mask_dir if os.path.isdir(mask_dir) else None)


def _good_folder_samples(root):
    if not os.path.isdir(root):
        raise UserError(f"training folder not found: {root}")
    folder = os.path.join(root, GOOD) if os.path.isdir(os.path.join(root, GOOD)) else root
    files = list_images(folder)
    if not files:
        raise UserError(f"no training images in {folder}")
    return [Sample(path, 0, GOOD) for path in files]


def folder_samples(test_dir, mask_dir=None):
    """Samples of a test folder with ``good/`` and defect sub-folders; masks looked up in ``mask_dir``.

    A defect image's mask is ``MASK_DIR/DEFECT/STEM_mask.*`` or ``MASK_DIR/DEFECT/STEM.*``. When ``mask_dir`` is
    None no masks are attached; when it is given, every defect image must have a mask.
    """
    if not os.path.isdir(test_dir):
        raise UserError(f"test folder not found: {test_dir}")
    defect_types = sorted(d for d in os.listdir(test_dir) if os.path.isdir(os.path.join(test_dir, d)))
    if not defect_types:
        raise UserError(f"no sub-folders (good/ and defect types) in test folder {test_dir}")
    samples = []
    for defect in defect_types:
        for path in list_images(os.path.join(test_dir, defect)):
            if defect == GOOD:
                samples.append(Sample(path, 0, GOOD))
                continue
            mask_path = find_mask(mask_dir, defect, path) if mask_dir else None
            if mask_dir and mask_path is None:
                raise UserError(f"no mask for {path} in {os.path.join(mask_dir, defect)} "
                                "(expected STEM_mask.png); run python -m common.check_dataset")
            samples.append(Sample(path, 1, defect, (mask_path,) if mask_path else ()))
    if not samples:
        raise UserError(f"no test images in {test_dir}")
    return samples


def find_mask(mask_dir, defect, image_path):
    """Path of the mask of ``image_path`` in ``mask_dir/defect``, or None."""
    stem = os.path.splitext(os.path.basename(image_path))[0]
    folder = os.path.join(mask_dir, defect)
    for candidate_stem in (stem + "_mask", stem):
        for ext in IMAGE_EXTENSIONS:
            candidate = os.path.join(folder, candidate_stem + ext)
            if os.path.isfile(candidate):
                return candidate
    return None



def _train(root, cls, fold=None):
    no_fold("mvtec", fold)
    return train_samples(root, cls)


def _test(root, cls, fold=None):
    no_fold("mvtec", fold)
    return test_samples(root, cls)


FORMAT = DatasetFormat(
    name="mvtec", description="MVTec AD, or your own classes in its layout (ground_truth optional)",
    classes=ALL_CLASSES, groups=GROUPS, list_classes=available_classes, train=_train, test=_test)


def _folder_classes(root):
    """The one class of a ``folder`` dataset: the folder's own name."""
    if not os.path.isdir(root):
        raise UserError(f"data folder not found: {root}")
    if not (os.path.isdir(os.path.join(root, "train")) or os.path.isdir(os.path.join(root, "test"))):
        raise UserError(f"{root} has no train/ or test/ folder (--dataset folder: one class in MVTec AD layout)")
    return [os.path.basename(os.path.normpath(root))]


def _folder_train(root, cls, fold=None):
    no_fold("folder", fold)
    return train_samples(root, cls)


def _folder_test(root, cls, fold=None):
    no_fold("folder", fold)
    return test_samples(root, cls)


# one class of your own: --data_dir is the class folder itself (train/[good/], test/good, test/DEFECT, optional
# ground_truth/DEFECT/STEM_mask.png); the class is the folder's name
FOLDER_FORMAT = DatasetFormat(
    name="folder", description="one class of your own in MVTec AD layout; --data_dir is the class folder",
    classes=(), list_classes=_folder_classes, train=_folder_train, test=_folder_test)
