"""MVTec LOCO AD, as MVTec publishes it (and as its official evaluator reads it).

Layout::

    ROOT/OBJECT/train/good/NNN.png                   anomaly-free
    ROOT/OBJECT/validation/good/NNN.png              anomaly-free, the format's own validation split
    ROOT/OBJECT/test/{good,logical_anomalies,structural_anomalies}/NNN.png
    ROOT/OBJECT/ground_truth/{logical,structural}_anomalies/NNN/MMM.png   one PNG ("channel") per annotated defect
    ROOT/OBJECT/defects_config.json                  pixel value -> defect type and its saturation threshold

A channel holds 0 and one positive value, the key of its defect type in ``defects_config.json``; the defect of an
image is the union of its channels. The config is needed only to evaluate (the sPRO saturation of each channel):
:func:`read_defects_config` and :func:`defect_channels` read it; listing samples never does.
"""
import json
import os
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from common.core.errors import UserError
from common.data.images import image_size as header_size
from common.data.readers.mvtec import available_classes, class_dir
from common.data.samples import GOOD, MASK_NONZERO, DatasetFormat, Sample

from ._common import by_name, images_in, no_fold, require_folder

CLASSES = ("breakfast_box", "juice_bottle", "pushpins", "screw_bag", "splicing_connectors")
SUBSETS = ("logical_anomalies", "structural_anomalies")   # the anomalous test folders; each is scored on its own
TEST_FOLDERS = (GOOD,) + SUBSETS
CONFIG_FILE = "defects_config.json"
CONFIG_FIELDS = ("defect_name", "pixel_value", "saturation_threshold", "relative_saturation")


def list_classes(root):
    """Object folders under ``root`` (folders holding ``train/`` or ``test/``)."""
    return available_classes(root)


def _good_folder(root, cls, split, fold):
    no_fold("mvtec_loco", fold)
    folder = require_folder(os.path.join(class_dir(root, cls), split, GOOD), f"{split} folder")
    files = images_in(folder, (".png",))
    if not files:
        raise UserError(f"no {split} images in {folder}")
    return [Sample(path, 0, GOOD, mask_rule=MASK_NONZERO) for path in files]


def train_samples(root, cls, fold=None):
    """The anomaly-free images of ``OBJECT/train/good``."""
    return _good_folder(root, cls, "train", fold)


def validation_samples(root, cls, fold=None):
    """The anomaly-free images of ``OBJECT/validation/good`` (MVTec's validation split, e.g. EfficientAD's)."""
    return _good_folder(root, cls, "validation", fold)


def _channel_files(folder):
    # the evaluator globs '*.png' (case-sensitive, no hidden files) and reads the channels in sorted order
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".png") and not f.startswith("."))


def test_samples(root, cls, fold=None):
    """Test images: ``good`` (label 0) and the two anomalous subsets with one mask file per defect channel."""
    no_fold("mvtec_loco", fold)
    base = class_dir(root, cls)
    test_dir = require_folder(os.path.join(base, "test"), "test folder")
    gt_dir = os.path.join(base, "ground_truth")
    folders = sorted(d for d in os.listdir(test_dir) if os.path.isdir(os.path.join(test_dir, d))
                     and not d.startswith("."))
    for folder in folders:
        if folder not in TEST_FOLDERS:
            raise UserError(f"unknown test folder {os.path.join(test_dir, folder)}: MVTec LOCO test/ holds only "
                            f"{', '.join(TEST_FOLDERS)}")
    samples = []
    for folder in folders:
        for path in images_in(os.path.join(test_dir, folder), (".png",)):
            if folder == GOOD:
                samples.append(Sample(path, 0, GOOD, mask_rule=MASK_NONZERO))
                continue
            channel_dir = os.path.join(gt_dir, folder, os.path.splitext(os.path.basename(path))[0])
            if not os.path.isdir(channel_dir):
                raise UserError(f"no ground truth for {path}: expected the folder {channel_dir}")
            channels = _channel_files(channel_dir)
            if not channels:
                raise UserError(f"ground-truth folder {channel_dir} holds no .png channel")
            samples.append(Sample(path, 1, folder, channels, MASK_NONZERO))
    if not samples:
        raise UserError(f"no test images in {test_dir}")
    _check_no_orphan_ground_truth(gt_dir, {s.name for s in samples})
    return by_name(samples, test_dir)


def _check_no_orphan_ground_truth(gt_dir, names):
    """Every ground-truth folder must belong to a test image: the evaluator stops on one that has no map."""
    if not os.path.isdir(gt_dir):
        return
    for folder in sorted(os.listdir(gt_dir)):
        path = os.path.join(gt_dir, folder)
        if folder.startswith("."):
            continue
        if folder not in SUBSETS:
            raise UserError(f"unknown ground-truth folder {path}: MVTec LOCO ground_truth/ holds only "
                            f"{', '.join(SUBSETS)}")
        for image_dir in sorted(os.listdir(path)):
            if not image_dir.startswith(".") and f"{folder}/{image_dir}" not in names:
                raise UserError(f"ground truth {os.path.join(path, image_dir)} has no test image "
                                f"{os.path.join(os.path.dirname(gt_dir), 'test', folder, image_dir)}.png")


# -- defects_config.json and the per-channel ground truth of the evaluator ---------------------------------------
@dataclass(frozen=True)
class Defect:
    """One entry of ``defects_config.json``: a defect type, its channel pixel value and its sPRO saturation.

    ``saturation_threshold`` is a float in (0, 1] (a fraction of the defect's area) when ``relative_saturation``,
    else an int (a number of pixels).
    """

    defect_name: str
    pixel_value: int
    saturation_threshold: int | float
    relative_saturation: bool


class Channel(NamedTuple):
    """One ground-truth channel of an anomalous image, with its defect's saturation rule."""

    mask: np.ndarray                # bool (H, W)
    saturation_threshold: int | float
    relative_saturation: bool
    defect_name: str


def read_defects_config(class_folder):
    """``{pixel value: Defect}`` from ``class_folder/defects_config.json``, with the evaluator's type rules.

    The file is a JSON array of objects with ``defect_name``, ``pixel_value`` (1..255), ``saturation_threshold``
    and ``relative_saturation``. A relative threshold must be a JSON float (``1.0``, not ``1``) in (0, 1], an
    absolute one a JSON int, as the evaluator asserts. Anything else is a one-line error naming the file and entry.
    """
    path = os.path.join(class_folder, CONFIG_FILE)
    if not os.path.isfile(path):
        raise UserError(f"{CONFIG_FILE} not found in {class_folder}: MVTec LOCO evaluation needs the object's "
                        f"defects config (it ships with the dataset)")
    try:
        with open(path, encoding="utf-8") as handle:
            entries = json.load(handle)
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(entries, list):
        raise UserError(f"{path}: expected a JSON array of defect entries, got {type(entries).__name__}")
    defects = {}
    for index, entry in enumerate(entries):
        defect = _defect_entry(path, index, entry)
        if defect.pixel_value in defects:
            raise UserError(f"{path}: entries {defects[defect.pixel_value][0]} and {index} share pixel_value "
                            f"{defect.pixel_value}")
        defects[defect.pixel_value] = (index, defect)
    return {value: defect for value, (_, defect) in defects.items()}


def _defect_entry(path, index, entry):
    where = f"{path} entry {index}"
    if not isinstance(entry, dict):
        raise UserError(f"{where}: expected an object with {', '.join(CONFIG_FIELDS)}")
    missing = [key for key in CONFIG_FIELDS if key not in entry]
    if missing:
        raise UserError(f"{where}: missing {', '.join(missing)}")
    name, value = entry["defect_name"], entry["pixel_value"]
    threshold, relative = entry["saturation_threshold"], entry["relative_saturation"]
    where = f"{where} ({name})"
    if not isinstance(name, str):
        raise UserError(f"{where}: defect_name must be a string")
    # bool is an int in Python: exclude it from every numeric field
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= 255 \
            or value != int(value):
        raise UserError(f"{where}: pixel_value must be an integer in 1..255, got {value!r}")
    if not isinstance(relative, bool):
        raise UserError(f"{where}: relative_saturation must be true or false, got {relative!r}")
    if relative:
        if not isinstance(threshold, float) or not 0.0 < threshold <= 1.0:
            raise UserError(f"{where}: a relative saturation_threshold must be a JSON float in (0, 1] "
                            f"(write 1.0, not 1), got {threshold!r}")
    elif isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
        raise UserError(f"{where}: an absolute saturation_threshold must be a positive JSON integer (a pixel "
                        f"count), got {threshold!r}")
    return Defect(name, int(value), threshold, relative)


def _channel_values(path):
    """The integer pixel values of a channel PNG as stored (as the evaluator reads them: no conversion)."""
    try:
        with Image.open(path) as image:
            mode = image.mode
            values = np.array(image)
    except FileNotFoundError:
        raise UserError(f"ground-truth channel not found: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UserError(f"cannot read ground-truth channel {path}: {exc}") from None
    if values.ndim != 2 or not np.issubdtype(values.dtype, np.integer):
        raise UserError(f"ground-truth channel {path} must be a single-channel integer image, got mode {mode}")
    return values


def defect_channels(sample, defects, image_size=None):
    """The channels of an anomalous test ``sample``: one :class:`Channel` per mask file, in sorted file order.

    ``defects`` is :func:`read_defects_config`'s result; ``image_size`` the image's (width, height), read from
    the image header when None. Each channel must have the image's size and hold exactly one positive value, which
    must be in the config. A normal sample has no channels (``[]``).
    """
    if not sample.mask_paths:
        return []
    width, height = image_size if image_size is not None else header_size(sample.path)
    channels = []
    for path in sample.mask_paths:
        values = _channel_values(path)
        if values.shape != (height, width):
            raise UserError(f"ground-truth channel {path} is {values.shape[1]}x{values.shape[0]} but its image "
                            f"{sample.path} is {width}x{height}")
        if values.min() < 0:
            raise UserError(f"ground-truth channel {path} has negative values")
        positive = np.unique(values[values > 0])
        if positive.size == 0:
            raise UserError(f"ground-truth channel {path} has no defect pixel (all zero)")
        if positive.size > 1:
            raise UserError(f"ground-truth channel {path} holds several defect values "
                            f"({', '.join(str(int(v)) for v in positive)}); a channel holds one")
        value = int(positive[0])
        if value not in defects:
            known = ", ".join(str(v) for v in sorted(defects)) or "none"
            raise UserError(f"ground-truth channel {path} has pixel value {value}, which is not in the object's "
                            f"{CONFIG_FILE} (values: {known})")
        defect = defects[value]
        channels.append(Channel(values > 0, defect.saturation_threshold, defect.relative_saturation,
                                defect.defect_name))
    return channels


FORMAT = DatasetFormat(
    name="mvtec_loco",
    description="MVTec LOCO AD: 5 objects with logical and structural anomalies; train/good, validation/good, "
                "test/{good,logical_anomalies,structural_anomalies}, one ground-truth PNG per defect "
                "(ground_truth/SUBSET/STEM/MMM.png) and defects_config.json for the sPRO saturation",
    classes=CLASSES,
    list_classes=list_classes,
    train=train_samples,
    test=test_samples,
    validation=validation_samples,
    groups={"all": CLASSES},
)
