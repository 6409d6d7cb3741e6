"""Retinal-OCT "OCT2017" (Kermany et al. 2018) as a one-class novelty benchmark (``--dataset retina``).

Layout, as the official KDAD code reads it (``dataloader.py``: ``ImageFolder('Dataset/OCT2017/train')`` and
``ImageFolder('Dataset/OCT2017/test')``)::

    ROOT/train/CNV/CNV-<patient>-<n>.jpeg   ... DME/, DRUSEN/, NORMAL/
    ROOT/test/CNV/*.jpeg                    ... DME/, DRUSEN/, NORMAL/
    ROOT/val/                               (Kaggle's copy has it; ignored, as by the official code)

``ROOT`` may also be the folder holding ``OCT2017/`` (Kaggle's copy names it ``OCT2017 `` with a trailing space).
Class indices follow ImageFolder: the class folders of ``test/`` sorted by name, so CNV=0, DME=1, DRUSEN=2,
NORMAL=3, and the official ``normal_class: 3`` is NORMAL. Hidden folders (``.ipynb_checkpoints``) are skipped,
where ImageFolder would count them. Images are read from disk when used (no pixels in memory); grayscale JPEGs
become RGB like ImageFolder's loader. Counts vary between copies and are never assumed.

One-class protocol (the default): train = ``train/<normal class>`` only, label 0; test = every class folder of
``test/``, label 0 for the normal class and 1 for the others (defect type: the folder name).

Official behaviour, as an explicit option: KDAD trains on the whole ``OCT2017/train`` ImageFolder, every class
unfiltered (benchmarks spec P12). ``train(root, cls, all_classes=True)`` lists that set: every image of every
class folder of ``train/``, labelled by the protocol rule (0 for the normal class, 1 for the others) so that the
mix is visible; a method reproducing the official run trains on all of them regardless of label.
"""
import os

from common.core.errors import UserError
from common.data.images import list_images
from common.data.readers.one_class import protocol_label, resolve_class
from common.data.samples import DatasetFormat, Sample

CLASSES = ("CNV", "DME", "DRUSEN", "NORMAL")  # ImageFolder's (sorted) order
NORMAL = "NORMAL"
FOLDER_NAMES = ("OCT2017", "OCT2017 ")
SOURCE = ("Mendeley Data 'Labeled Optical Coherence Tomography (OCT) and Chest X-Ray Images' "
          "(https://data.mendeley.com/datasets/rscbjbr9sj) or Kaggle paultimothymooney/kermany2018")


def list_classes(root):
    """The class folders of ``test/`` in ImageFolder's order (sorted by name); the four published ones must be
    there, since a missing one would shift the indices the official configs use."""
    test_dir = os.path.join(locate(root), "test")
    present = class_folders(test_dir)
    missing = [name for name in CLASSES if name not in present]
    if missing:
        raise UserError(f"class folder {os.path.join(test_dir, missing[0])} not found; OCT2017 test/ must hold "
                        f"{', '.join(CLASSES)} (found: {', '.join(present) or 'none'})")
    return present


def train(root, cls, fold=None, all_classes=False):
    """The training images of normal class ``cls`` (a name or an index; NORMAL = 3), label 0.

    ``all_classes=True``: the official KDAD training set instead, every class folder of ``train/`` (see the module
    docstring), labelled 0 for ``cls`` and 1 for the others.
    """
    base = locate(root)
    normal = resolve_class(list_classes(base), cls, "retina")
    train_dir = os.path.join(base, "train")
    folders = class_folders(train_dir) if all_classes else [normal]
    if normal not in class_folders(train_dir):
        raise UserError(f"training folder not found: {os.path.join(train_dir, normal)}")
    samples = _samples(train_dir, folders, normal)
    if not any(sample.label == 0 for sample in samples):
        raise UserError(f"no training images in {os.path.join(train_dir, normal)}")
    return samples


def test(root, cls, fold=None):
    """Every image of every class folder of ``test/``: label 0 for class ``cls``, 1 for the others."""
    base = locate(root)
    classes = list_classes(base)
    normal = resolve_class(classes, cls, "retina")
    test_dir = os.path.join(base, "test")
    samples = _samples(test_dir, classes, normal)
    if not any(sample.label == 0 for sample in samples):
        raise UserError(f"no test images in {os.path.join(test_dir, normal)}")
    return samples


FORMAT = DatasetFormat(
    name="retina",
    description="Retinal-OCT (OCT2017) one-class novelty: NORMAL (index 3) normal, CNV/DME/DRUSEN anomalous",
    classes=CLASSES,
    list_classes=list_classes,
    train=train,
    test=test,
    groups={"all": CLASSES},
    kind="one_class",
)


def locate(root):
    """The OCT2017 folder (holding ``train/`` and ``test/``) at ``root`` or in ``root/OCT2017``."""
    root = os.path.normpath(str(root))
    for candidate in (root,) + tuple(os.path.join(root, name) for name in FOLDER_NAMES):
        if os.path.isdir(os.path.join(candidate, "train")) and os.path.isdir(os.path.join(candidate, "test")):
            return candidate
    raise UserError(f"OCT2017 folder not found: {root} needs train/ and test/ (or OCT2017/train and "
                    f"OCT2017/test); it comes from {SOURCE}; put it there")


def class_folders(folder):
    """The non-hidden sub-folders of ``folder``, sorted as ImageFolder sorts them."""
    if not os.path.isdir(folder):
        return []
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith("."))


def _samples(split_dir, folders, normal):
    samples = []
    for name in folders:
        label, defect = protocol_label(name, normal)
        samples.extend(Sample(path, label, defect) for path in list_images(os.path.join(split_dir, name)))
    return samples
