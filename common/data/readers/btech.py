"""BTech (BTAD), as released (``BTech_Dataset_transformed/``; anomalib calls the folder ``BTech``).

Layout::

    ROOT/{01,02,03}/train/ok/*.{bmp,png}
    ROOT/{01,02,03}/test/ok/*.{bmp,png}
    ROOT/{01,02,03}/test/ko/*.{bmp,png}
    ROOT/{01,02,03}/ground_truth/ko/STEM.png      product 03: STEM.bmp (anomalib's converted trees: all .png)

``ok`` images are normal (defect type ``good``), ``ko`` images anomalous (defect type ``ko``); masks are 0/255 and
read as "defect where > 0". Images and masks may be BMP or PNG in every product.
"""
import os

from common.core.errors import UserError
from common.data.readers.mvtec import available_classes, class_dir
from common.data.samples import GOOD, MASK_NONZERO, DatasetFormat, Sample

from ._common import by_name, images_in, no_fold, require_folder

CLASSES = ("01", "02", "03")
OK, KO = "ok", "ko"
EXTENSIONS = (".bmp", ".png")


def list_classes(root):
    """Product folders under ``root`` (folders holding ``train/`` or ``test/``)."""
    return available_classes(root)


def train_samples(root, cls, fold=None):
    """The normal images of ``PRODUCT/train/ok``."""
    no_fold("btech", fold)
    folder = require_folder(os.path.join(class_dir(root, cls), "train", OK), "training folder")
    files = images_in(folder, EXTENSIONS)
    if not files:
        raise UserError(f"no training images in {folder}")
    return [Sample(path, 0, GOOD, mask_rule=MASK_NONZERO) for path in files]


def _mask(gt_folder, image):
    stem = os.path.splitext(os.path.basename(image))[0]
    candidates = [os.path.join(gt_folder, stem + ext) for ext in EXTENSIONS[::-1]]  # .png first, as anomalib
    found = next((path for path in candidates if os.path.isfile(path)), None)
    if found is None:
        raise UserError(f"no mask for {image}: expected {candidates[0]} or {candidates[1]}")
    return found


def test_samples(root, cls, fold=None):
    """``test/ok`` as ``good`` (label 0) and ``test/ko`` as ``ko`` (label 1) with ``ground_truth/ko/STEM``."""
    no_fold("btech", fold)
    base = class_dir(root, cls)
    test_dir = require_folder(os.path.join(base, "test"), "test folder")
    for folder in sorted(os.listdir(test_dir)):
        if os.path.isdir(os.path.join(test_dir, folder)) and folder not in (OK, KO) and not folder.startswith("."):
            raise UserError(f"unknown test folder {os.path.join(test_dir, folder)}: BTech test/ holds only ok and ko")
    samples = [Sample(path, 0, GOOD, mask_rule=MASK_NONZERO) for path in images_in(os.path.join(test_dir, OK),
                                                                                  EXTENSIONS)]
    gt_folder = os.path.join(base, "ground_truth", KO)
    for path in images_in(os.path.join(test_dir, KO), EXTENSIONS):
        samples.append(Sample(path, 1, KO, (_mask(gt_folder, path),), MASK_NONZERO))
    if not samples:
        raise UserError(f"no test images in {test_dir}")
    return by_name(samples, test_dir)


FORMAT = DatasetFormat(
    name="btech",
    description="BTech (BTAD): products 01, 02, 03; train/ok, test/ok and test/ko (.bmp or .png), masks "
                "ground_truth/ko/STEM.png or .bmp (defect where > 0); test defect type 'ko'",
    classes=CLASSES,
    list_classes=list_classes,
    train=train_samples,
    test=test_samples,
    groups={"all": CLASSES},
)
