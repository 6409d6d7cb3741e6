"""MNIST (``--dataset mnist``) and Fashion-MNIST (``--dataset fashionmnist``) as one-class novelty benchmarks.

Both are distributed as the same four IDX files (http://yann.lecun.com/exdb/mnist/,
https://github.com/zalandoresearch/fashion-mnist)::

    train-images-idx3-ubyte.gz   train-labels-idx1-ubyte.gz   (60,000 images)
    t10k-images-idx3-ubyte.gz    t10k-labels-idx1-ubyte.gz    (10,000 images)

looked up in ``ROOT``, ``ROOT/raw`` and torchvision's ``ROOT/MNIST/raw`` or ``ROOT/FashionMNIST/raw`` (the layout
of the official KDAD code's ``./Dataset/MNIST/train``), gzipped or not (the un-gzipped file is read when both are
there; a gzipped file is recognised by its content, whatever its name), also as Kaggle spells them
(``train-images.idx3-ubyte``). An IDX file starts with big-endian uint32
values: the magic number 2051 (0x00000803: unsigned bytes, 3 dimensions) then N, rows, cols for images; 2049
(0x00000801, 1 dimension) then N for labels; then the uint8 values, images row-major.

Classes: MNIST's are the digits ``0`` .. ``9``; Fashion-MNIST's are the published names with ``/`` and spaces made
path-safe (``T-shirt_top``, ``Ankle_boot``); the published spellings (``T-shirt/top``) and the indices are accepted
as well (:func:`common.data.readers.one_class.resolve_class`).

One-class protocol (KDAD ``dataloader.py``): train = the training images of the normal class, in file order; test =
the whole t10k split, label 0 for the normal class and 1 for the others (defect type: the image's class). Samples
carry their pixels (uint8 28x28 views of one array per split); ``path`` is ``IMAGE_FILE/ROW``, ``name``
``DEFECT/ROW``.

Paddle's ``MNIST`` / ``FashionMNIST`` are not used for reading: they read gzipped files only, ignore the magic
numbers, assume 28x28, need a count that is a multiple of 100 and keep float32 copies; their URLs, checksums and
downloader are used for ``download=True``.
"""
import functools
import gzip
import os
import zlib
from dataclasses import dataclass

import numpy as np

from common.core.download import quiet_paddle_download
from common.core.errors import UserError
from common.data.readers.one_class import ArraySplit, file_stamp, frozen, missing_file, one_class_samples, resolve_class
from common.data.samples import DatasetFormat

FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IMAGES_MAGIC = 0x00000803  # 2051
LABELS_MAGIC = 0x00000801  # 2049
GZIP_MAGIC = b"\x1f\x8b"

DIGITS = tuple(str(digit) for digit in range(10))
# published: T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot
FASHION_CLASSES = ("T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle_boot")


@dataclass(frozen=True)
class Variant:
    """What differs between MNIST and Fashion-MNIST."""

    name: str            # --dataset value
    title: str           # for messages
    torch_folder: str    # torchvision's ROOT/<torch_folder>/raw
    paddle_class: str    # paddle.vision.datasets class holding the download URLs and MD5s
    classes: tuple
    source: str


MNIST = Variant("mnist", "MNIST", "MNIST", "MNIST", DIGITS,
                "http://yann.lecun.com/exdb/mnist/ or https://ossci-datasets.s3.amazonaws.com/mnist/")
FASHION = Variant("fashionmnist", "Fashion-MNIST", "FashionMNIST", "FashionMNIST", FASHION_CLASSES,
                  "https://github.com/zalandoresearch/fashion-mnist")


# ----------------------------------------------------------------------------------------------------------------
# Public reader functions
# ----------------------------------------------------------------------------------------------------------------
def list_classes(root, download=False, variant=MNIST):
    """The ten classes in label order, once the four files are found under ``root``."""
    for split in FILES:
        split_files(root, split, variant, download)
    return variant.classes


def train(root, cls, fold=None, download=False, variant=MNIST):
    """The training images of normal class ``cls`` (a name or an index 0-9), label 0, in file order."""
    split = load_split(root, "train", variant, download)
    return one_class_samples(split, resolve_class(split.classes, cls, variant.name), train=True)


def test(root, cls, fold=None, download=False, variant=MNIST):
    """The whole test split: label 0 for class ``cls``, 1 (defect type: the image's class) for the others."""
    split = load_split(root, "test", variant, download)
    return one_class_samples(split, resolve_class(split.classes, cls, variant.name), train=False)


def fashion_list_classes(root, download=False):
    """:func:`list_classes` of Fashion-MNIST."""
    return list_classes(root, download, FASHION)


def fashion_train(root, cls, fold=None, download=False):
    """:func:`train` of Fashion-MNIST."""
    return train(root, cls, fold, download, FASHION)


def fashion_test(root, cls, fold=None, download=False):
    """:func:`test` of Fashion-MNIST."""
    return test(root, cls, fold, download, FASHION)


FORMAT = DatasetFormat(
    name="mnist",
    description="MNIST one-class novelty: one digit normal, the nine others anomalous",
    classes=DIGITS,
    list_classes=list_classes,
    train=train,
    test=test,
    groups={"all": DIGITS},
    kind="one_class",
)

FORMAT_FASHION = DatasetFormat(
    name="fashionmnist",
    description="Fashion-MNIST one-class novelty: one article class normal, the nine others anomalous",
    classes=FASHION_CLASSES,
    list_classes=fashion_list_classes,
    train=fashion_train,
    test=fashion_test,
    groups={"all": FASHION_CLASSES},
    kind="one_class",
)


def download_file(root, name, variant=MNIST):
    """Download ``NAME.gz`` (one of :data:`FILES`) into ``root`` with Paddle's downloader and its MD5; returns the
    path. Needs internet; nothing else in this module does."""
    import paddle.vision.datasets as datasets
    from paddle.utils.download import get_path_from_url

    paddle_class = getattr(datasets, variant.paddle_class)
    split = "TRAIN" if name.startswith("train") else "TEST"
    kind = "IMAGE" if "images" in name else "LABEL"
    url, md5 = getattr(paddle_class, f"{split}_{kind}_URL"), getattr(paddle_class, f"{split}_{kind}_MD5")
    try:
        with quiet_paddle_download():
            return get_path_from_url(url, root, md5, decompress=False)
    except (RuntimeError, OSError) as exc:
        raise UserError(f"cannot download {url} into {root} ({exc}); put {name}.gz there by hand (it comes from "
                        f"{variant.source})") from None


# ----------------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------------
def search_folders(root, variant):
    """The folders an IDX file is looked up in, in order."""
    return (root, os.path.join(root, "raw"), os.path.join(root, variant.torch_folder, "raw"))


def find_file(root, name, variant):
    """``NAME`` or ``NAME.gz`` in the first of :func:`search_folders` that has it, or None. Kaggle's copies spell the
    names with a dot (``train-images.idx3-ubyte``); those are found too."""
    dotted = name.replace("-idx", ".idx")
    for folder in search_folders(root, variant):
        for candidate in (name, name + ".gz", dotted, dotted + ".gz"):
            path = os.path.join(folder, candidate)
            if os.path.isfile(path):
                return path
    return None


def split_files(root, split, variant=MNIST, download=False):
    """(image file, label file) of ``split``; a missing file is a :class:`UserError`, or downloaded into ``root``
    when ``download`` is set."""
    root = os.path.normpath(str(root))
    paths = []
    for name in FILES[split]:
        path = find_file(root, name, variant)
        if path is None and download:
            os.makedirs(root, exist_ok=True)
            path = download_file(root, name, variant)
        if path is None:
            torch_raw = os.path.join(root, variant.torch_folder, "raw")
            raise missing_file(f"{variant.title} file", f"{os.path.join(root, name)}.gz (or un-gzipped, or in "
                               f"{torch_raw}/)", variant.source, download=variant.name, root=root)
        paths.append(path)
    return tuple(paths)


def load_split(root, split, variant=MNIST, download=False):
    """The :class:`ArraySplit` of ``split`` (``train`` or ``test``), decoded once per file state."""
    paths = split_files(root, split, variant, download)
    return _decode_split(paths, variant.classes, file_stamp(paths))


@functools.lru_cache(maxsize=2)
def _decode_split(paths, classes, stamp):
    image_path, label_path = paths
    images = read_idx(image_path, IMAGES_MAGIC)
    labels = read_idx(label_path, LABELS_MAGIC)
    if len(images) != len(labels):
        raise UserError(f"{image_path} holds {len(images)} images but {label_path} holds {len(labels)} labels")
    if len(labels) and labels.max() >= len(classes):
        raise UserError(f"{label_path}: labels must be 0..{len(classes) - 1}, found {labels.max()}")
    return ArraySplit(frozen(images), frozen(labels.astype(np.int64)), classes, ((image_path, len(images)),))


def read_idx(path, magic):
    """The uint8 array of an IDX file whose magic number must be ``magic`` (:data:`IMAGES_MAGIC`: (N, rows, cols),
    :data:`LABELS_MAGIC`: (N,)); a wrong magic, a short header or a size that disagrees with the header is a
    :class:`UserError` naming the file."""
    data = _file_bytes(path)
    dims = magic & 0xFF
    header = 4 * (1 + dims)
    kind = "image" if magic == IMAGES_MAGIC else "label"
    if len(data) < header:
        raise UserError(f"{path}: {len(data)} bytes, too short for an IDX {kind} header ({header} bytes)")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise UserError(f"{path}: IDX magic number {found} (0x{found:08x}), expected {magic} (0x{magic:08x}) "
                        f"for an IDX {kind} file")
    shape = tuple(int.from_bytes(data[4 * i:4 * i + 4], "big") for i in range(1, dims + 1))
    expected = int(np.prod(shape))
    if len(data) - header != expected:
        raise UserError(f"{path}: {len(data) - header} bytes of data, but its header {shape} needs {expected} "
                        "(truncated or not an IDX file)")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _file_bytes(path):
    """The content of ``path``, gunzipped when it is gzip data."""
    with open(path, "rb") as handle:
        data = handle.read()
    if data[:2] != GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"cannot read {path}: truncated or damaged gzip file ({exc})") from None
