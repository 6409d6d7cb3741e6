"""CIFAR-10, python version, as a one-class novelty benchmark (``--dataset cifar10``).

Layout as distributed (https://www.cs.toronto.edu/~kriz/cifar.html)::

    ROOT/cifar-10-python.tar.gz                  the archive, read as it is (no extraction needed), or
    ROOT/cifar-10-batches-py/data_batch_1 .. _5   the training batches, in this order
    ROOT/cifar-10-batches-py/test_batch           the test batch
    ROOT/cifar-10-batches-py/batches.meta         ``label_names``: the class names in label order

``ROOT`` may also be the ``cifar-10-batches-py`` folder or the archive itself (torchvision keeps both
beside each other); the extracted folder is read when both are there. Each batch is a Python-2 pickle of a dict
whose ``data`` is uint8 (N, 3072), a row being the 1024 red, 1024 green and 1024 blue values of a 32x32 image, each
plane row-major, and whose ``labels`` are N ints. Python 2 wrote the keys as byte strings: they are read with
``latin1`` and byte-string keys (``b'data'``, as Python 3 sees them with ``encoding='bytes'``) are accepted too.

One-class protocol (KDAD ``dataloader.py``): the class is the normal class; train = the training images of that
class, in the official order; test = the whole test batch, label 0 for the normal class and 1 for the others.
Samples carry their pixels (uint8 32x32x3 views of one array per split); their ``path`` is the pseudo-path
``SOURCE/BATCH/ROW`` (SOURCE the folder, or ``ARCHIVE/cifar-10-batches-py``), their ``name`` ``DEFECT/INDEX`` with
INDEX the image's position in its split (0..49999 for train, as in torchvision's dataset).

The decoded splits are cached per file (size and modification time), so listing the ten classes decodes the
archive once. Paddle's ``Cifar10`` is not used for reading: it reads only the archive, only byte-string keys, not
``batches.meta``, and re-seeks the gzip stream per batch; its URL and downloader are used for ``download=True``.
"""
import functools
import io
import os
import pickle
import tarfile
import zlib

import numpy as np

from common.core.download import quiet_paddle_download
from common.core.errors import UserError
from common.data.readers.one_class import ArraySplit, file_stamp, frozen, missing_file, one_class_samples, resolve_class
from common.data.samples import DatasetFormat

ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
META = "batches.meta"
SPLITS = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
# the published label order; used when batches.meta is absent (batches.meta's label_names win when present)
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SOURCE = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
SIDE = 32
ROW_LENGTH = 3 * SIDE * SIDE


# ----------------------------------------------------------------------------------------------------------------
# Public reader functions
# ----------------------------------------------------------------------------------------------------------------
def list_classes(root, download=False):
    """The ten class names in label order (``batches.meta`` ``label_names``, else :data:`CLASSES`)."""
    return _classes(locate(root, download))


def train(root, cls, fold=None, download=False):
    """The training images of normal class ``cls`` (a name or an index 0-9), label 0, in the official order."""
    split = _split(locate(root, download), "train")
    return one_class_samples(split, resolve_class(split.classes, cls, "cifar10"), train=True)


def test(root, cls, fold=None, download=False):
    """The whole test batch: label 0 for class ``cls``, 1 (defect type: the image's class name) for the others."""
    split = _split(locate(root, download), "test")
    return one_class_samples(split, resolve_class(split.classes, cls, "cifar10"), train=False)


def download_archive(root):
    """Download ``cifar-10-python.tar.gz`` into ``root`` with Paddle's downloader (checks its MD5); returns the
    archive's path. Needs internet; nothing else in this module does."""
    from paddle.utils.download import get_path_from_url
    from paddle.vision.datasets.cifar import CIFAR10_MD5, CIFAR10_URL

    try:
        with quiet_paddle_download():
            return get_path_from_url(CIFAR10_URL, root, CIFAR10_MD5, decompress=False)
    except (RuntimeError, OSError) as exc:
        raise UserError(f"cannot download {CIFAR10_URL} into {root} ({exc}); put {ARCHIVE} there by hand (it "
                        f"comes from {SOURCE})") from None


FORMAT = DatasetFormat(
    name="cifar10",
    description="CIFAR-10 (python version) one-class novelty: one class normal, the nine others anomalous",
    classes=CLASSES,
    list_classes=list_classes,
    train=train,
    test=test,
    groups={"all": CLASSES},
    kind="one_class",
)


# ----------------------------------------------------------------------------------------------------------------
# Where the data is
# ----------------------------------------------------------------------------------------------------------------
def locate(root, download=False):
    """The extracted ``cifar-10-batches-py`` folder or the archive found at ``root``.

    A missing dataset is one :class:`UserError` naming the expected files, unless ``download`` is set: then the
    archive is downloaded into ``root``.
    """
    root = os.path.normpath(str(root))
    if os.path.isfile(root):
        return root
    if os.path.isdir(root):
        if os.path.basename(root) == FOLDER or os.path.isfile(os.path.join(root, SPLITS["test"][0])):
            return root
        for candidate in (os.path.join(root, FOLDER), os.path.join(root, ARCHIVE)):
            if os.path.exists(candidate):
                return candidate
    if download:
        os.makedirs(root, exist_ok=True)
        return download_archive(root)
    raise missing_file("CIFAR-10", f"{os.path.join(root, ARCHIVE)} (or its extracted {FOLDER}/)", SOURCE,
                       download="cifar10", root=root)


def _classes(source):
    """The class names of a source: ``batches.meta`` when present, else :data:`CLASSES`."""
    if os.path.isdir(source):
        meta = os.path.join(source, META)
        return _folder_classes(source, file_stamp([meta]) if os.path.isfile(meta) else ())
    return _archive(source, file_stamp([source]))["classes"]


def _split(source, split):
    """The :class:`ArraySplit` of ``split`` (``train`` or ``test``) of a source."""
    if os.path.isdir(source):
        files = [os.path.join(source, name) for name in SPLITS[split]]
        for path in files:
            if not os.path.isfile(path):
                raise missing_file("CIFAR-10 batch", path, SOURCE)
        return _folder_split(source, split, _classes(source), file_stamp(files))
    return _archive(source, file_stamp([source]))[split]


# ----------------------------------------------------------------------------------------------------------------
# Decoding (cached)
# ----------------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=2)
def _folder_classes(folder, stamp):
    if not stamp:
        return CLASSES
    path = os.path.join(folder, META)
    with open(path, "rb") as handle:
        return _label_names(_unpickle(handle.read(), path), path)


@functools.lru_cache(maxsize=2)
def _folder_split(folder, split, classes, stamp):
    batches = []
    for name in SPLITS[split]:
        path = os.path.join(folder, name)
        with open(path, "rb") as handle:
            batches.append((path, *_batch(_unpickle(handle.read(), path), path, classes)))
    return _assemble(batches, classes)


@functools.lru_cache(maxsize=1)
def _archive(path, stamp):
    """Both splits and the class names of the archive, decoded in one sequential pass over the gzip stream."""
    wanted = {f"{FOLDER}/{name}" for names in SPLITS.values() for name in names} | {f"{FOLDER}/{META}"}
    member_path = functools.partial(os.path.join, path)
    parsed = {}
    try:
        with tarfile.open(path, mode="r:*") as archive:
            for member in archive:
                name = member.name[2:] if member.name.startswith("./") else member.name
                if name in wanted and member.isfile():
                    parsed[name] = _unpickle(archive.extractfile(member).read(), member_path(name))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise UserError(f"cannot read {path}: truncated or not a tar.gz archive ({exc})") from None
    meta = f"{FOLDER}/{META}"
    classes = _label_names(parsed[meta], member_path(meta)) if meta in parsed else CLASSES
    contents = {"classes": classes}
    for split, names in SPLITS.items():
        batches = []
        for name in names:
            member = f"{FOLDER}/{name}"
            if member not in parsed:
                raise UserError(f"{path} has no member {member}: truncated, or not {ARCHIVE} ({SOURCE})")
            batches.append((member_path(member), *_batch(parsed.pop(member), member_path(member), classes)))
        contents[split] = _assemble(batches, classes)
    return contents


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles what a CIFAR-10 batch holds (dicts, lists, strings, ints, NumPy arrays) and refuses any other
    global, so a tampered file cannot run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
               ("numpy", "ndarray"), ("numpy", "dtype"),
               ("_codecs", "encode")}  # Python 3 writes bytes as _codecs.encode(str, 'latin1') in protocol 2

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not part of a CIFAR-10 batch")
        return super().find_class(module, name)


def _unpickle(data, path):
    """The dict in a CIFAR-10 pickle, keys as str (Python 2 wrote them as byte strings)."""
    try:
        # latin1: Python 2 byte strings (the keys, and the raw array bytes) decode 1:1, as NumPy documents
        obj = _BatchUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as exc:  # a malformed pickle can fail in many ways; each is the user's file, not a bug
        raise UserError(f"cannot read {path}: not a CIFAR-10 python pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise UserError(f"cannot read {path}: expected a pickled dict, got {type(obj).__name__}")
    return {_text(key): value for key, value in obj.items()}


def _text(value):
    return value.decode("latin1") if isinstance(value, bytes) else value


def _label_names(meta, path):
    names = meta.get("label_names")
    if not isinstance(names, (list, tuple)) or not names:
        raise UserError(f"{path} has no label_names list (keys: {sorted(map(str, meta))})")
    names = tuple(str(_text(name)) for name in names)
    if len(set(names)) != len(names) or any(not name or "/" in name for name in names):
        raise UserError(f"{path}: label_names must be distinct names without '/', got {list(names)}")
    return names


def _batch(batch, path, classes):
    """(data uint8 (N, 3072), labels int64 (N,)) of one batch dict, checked."""
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or labels is None:
        raise UserError(f"{path} is not a CIFAR-10 batch: it needs a 'data' array and 'labels' "
                        f"(keys: {sorted(map(str, batch))})")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != ROW_LENGTH:
        raise UserError(f"{path}: 'data' must be uint8 (N, {ROW_LENGTH}), got {data.dtype} {data.shape}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise UserError(f"{path}: 'labels' must be a list of integers") from None
    if labels.shape != (len(data),):
        raise UserError(f"{path}: {len(data)} images but {labels.size} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise UserError(f"{path}: labels must be 0..{len(classes) - 1}, found {labels.min()}..{labels.max()}")
    return data, labels


def _assemble(batches, classes):
    """One read-only (N, 32, 32, 3) uint8 array (HWC, contiguous) and the labels of a split's batches."""
    total = sum(len(data) for _, data, _ in batches)
    images = np.empty((total, SIDE, SIDE, 3), dtype=np.uint8)
    start = 0
    for _, data, _ in batches:
        # a row is three planes (R, G, B) of 32x32: (N, C, H, W) -> (N, H, W, C)
        images[start:start + len(data)] = data.reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1)
        start += len(data)
    labels = np.concatenate([labels for _, _, labels in batches])
    sources = tuple((path, len(data)) for path, data, _ in batches)
    return ArraySplit(frozen(images), frozen(labels), tuple(classes), sources)
