"""VisA in its raw release layout, split by the official 1-class split file ``split_csv/1cls.csv``.

Layout (``VisA_20220922.tar``)::

    ROOT/OBJECT/Data/Images/Normal/NNNN.JPG
    ROOT/OBJECT/Data/Images/Anomaly/NNN.JPG
    ROOT/OBJECT/Data/Masks/Anomaly/NNN.png       class ids of the defect types (0 background, 1, 2, ...)
    ROOT/split_csv/1cls.csv                       object,split,label,image,mask (paths relative to ROOT)

The CSV decides everything: ``split`` train/test, ``label`` normal/anomaly. As the official 1-class conversion
(spot-diff ``prepare_data.py``) names them, normal images are ``good`` and anomalous ones ``bad``; their masks are
not 0/255, so any value above 0 is a defect (:data:`MASK_NONZERO`). Image files keep their upper-case ``.JPG``.
"""
import csv
import os
from collections import namedtuple

from common.core.errors import UserError, suggest
from common.data.samples import GOOD, MASK_NONZERO, DatasetFormat, Sample

from ._common import by_name, no_fold

CLASSES = ("candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2", "pcb1", "pcb2",
           "pcb3", "pcb4", "pipe_fryum")
SPLIT_FILE = ("split_csv", "1cls.csv")
HEADER = ["object", "split", "label", "image", "mask"]
ANOMALY = "bad"   # the defect type of every anomalous image (the 1-class conversion's folder name)

Row = namedtuple("Row", "line object split label image mask")


def split_file(root):
    """Path of ``ROOT/split_csv/1cls.csv``; its absence is an error saying where it is expected."""
    if not os.path.isdir(root):
        raise UserError(f"data folder not found: {root}")
    path = os.path.join(root, *SPLIT_FILE)
    if not os.path.isfile(path):
        raise UserError(f"VisA split file not found: {path} (the official 1-class split, split_csv/1cls.csv of the "
                        f"VisA release or of amazon-science/spot-diff, must be in the VisA root)")
    return path


def read_split(root):
    """The rows of ``1cls.csv`` (with their line numbers), checked for the header and the split/label values."""
    path = split_file(root)
    try:
        with open(path, newline="", encoding="utf-8") as handle:  # the official file has CRLF line ends
            lines = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    if not lines or [field.strip() for field in lines[0]] != HEADER:
        raise UserError(f"{path}: the first line must be the header {','.join(HEADER)}")
    rows = []
    for number, fields in enumerate(lines[1:], start=2):
        if not fields or not any(field.strip() for field in fields):
            continue
        if len(fields) != len(HEADER):
            raise UserError(f"{path} line {number}: expected {len(HEADER)} fields ({','.join(HEADER)}), "
                            f"got {len(fields)}")
        row = Row(number, *(field.strip() for field in fields))
        if row.split not in ("train", "test"):
            raise UserError(f"{path} line {number}: split must be train or test, got '{row.split}'")
        if row.label not in ("normal", "anomaly"):
            raise UserError(f"{path} line {number}: label must be normal or anomaly, got '{row.label}'")
        rows.append(row)
    return path, rows


def list_classes(root):
    """Objects named in ``1cls.csv`` whose folder is under ``root``."""
    _, rows = read_split(root)
    return sorted({row.object for row in rows if os.path.isdir(os.path.join(root, row.object))})


def _file(root, relative, csv_path, row, what):
    path = os.path.join(root, *relative.split("/"))
    if not os.path.isfile(path):
        raise UserError(f"{what} {path} not found ({csv_path} line {row.line})")
    return path


def _samples(root, cls, split):
    csv_path, rows = read_split(root)
    objects = sorted({row.object for row in rows})
    if cls not in objects:
        raise UserError(f"class '{cls}' is not in {csv_path}{suggest(cls, objects)}")
    if not os.path.isdir(os.path.join(root, cls)):
        raise UserError(f"class folder not found: {os.path.join(root, cls)}")
    samples = []
    for row in rows:
        if row.object != cls or row.split != split:
            continue
        image = _file(root, row.image, csv_path, row, "image")
        if row.label == "normal":
            samples.append(Sample(image, 0, GOOD, mask_rule=MASK_NONZERO))
        elif split == "train":
            raise UserError(f"{csv_path} line {row.line}: an anomalous image in the train split; the 1-class "
                            "split trains on normal images only")
        elif not row.mask:
            raise UserError(f"{csv_path} line {row.line}: the anomalous image {row.image} has no mask")
        else:
            mask = _file(root, row.mask, csv_path, row, "mask")
            samples.append(Sample(image, 1, ANOMALY, (mask,), MASK_NONZERO))
    if not samples:
        raise UserError(f"no {split} images of '{cls}' in {csv_path}")
    return by_name(samples, f"{csv_path} ({cls}, {split})")


def train_samples(root, cls, fold=None):
    """The rows of ``cls`` with split ``train`` (all normal)."""
    no_fold("visa", fold)
    return _samples(root, cls, "train")


def test_samples(root, cls, fold=None):
    """The rows of ``cls`` with split ``test``: normal ones as ``good``, anomalous ones as ``bad`` with their mask."""
    no_fold("visa", fold)
    return _samples(root, cls, "test")


FORMAT = DatasetFormat(
    name="visa",
    description="VisA (raw release): 12 objects split by the official split_csv/1cls.csv; OBJECT/Data/Images/"
                "{Normal,Anomaly}/*.JPG, masks OBJECT/Data/Masks/Anomaly/*.png (defect where > 0); test defect "
                "type 'bad'",
    classes=CLASSES,
    list_classes=list_classes,
    train=train_samples,
    test=test_samples,
    groups={"all": CLASSES},
)
