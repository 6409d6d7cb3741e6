"""Tiny files in the exact published formats of CIFAR-10 (python version), MNIST / Fashion-MNIST (IDX) and OCT2017,
written from the format descriptions (benchmarks spec §1.6-1.8), for the reader tests.

- CIFAR-10 batches are pickled dicts in one of three styles: ``py2`` (written opcode by opcode as Python 2 pickled
  the real files: byte-string keys and array bytes, ``numpy.core.multiarray._reconstruct``), ``str`` (Python 3,
  protocol 2, str keys) and ``bytes`` (Python 3, protocol 2, bytes keys, as Python 3 sees the real files with
  ``encoding='bytes'``). They are written as an extracted ``cifar-10-batches-py/`` folder or as a real
  ``cifar-10-python.tar.gz`` with the official member names.
- IDX files have big-endian headers (magic 2051 / 2049), gzipped or not.
"""
import gzip
import io
import os
import pickle
import struct
import tarfile

import numpy as np
from PIL import Image

CIFAR_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))


# ----------------------------------------------------------------------------------------------------------------
# A Python-2 protocol-2 pickle, opcode by opcode (pickletools documents the opcodes)
# ----------------------------------------------------------------------------------------------------------------
def py2_pickle(obj):
    """``obj`` (dict, str, int, None, bool, list, tuple, uint8 ndarray) pickled as Python 2 did: str becomes a
    Python-2 byte string (SHORT_BINSTRING / BINSTRING), arrays go through ``numpy.core.multiarray._reconstruct``."""
    out = io.BytesIO()
    out.write(b"\x80\x02")
    _py2(obj, out)
    out.write(b".")
    return out.getvalue()


def _py2(obj, out):
    if isinstance(obj, bool):
        out.write(b"\x88" if obj else b"\x89")
    elif obj is None:
        out.write(b"N")
    elif isinstance(obj, int):
        out.write(b"K" + struct.pack("<B", obj) if 0 <= obj < 256 else b"J" + struct.pack("<i", obj))
    elif isinstance(obj, (str, bytes)):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        out.write((b"U" + struct.pack("<B", len(data))) if len(data) < 256 else (b"T" + struct.pack("<i", len(data))))
        out.write(data)
    elif isinstance(obj, dict):
        out.write(b"}(")
        for key, value in obj.items():
            _py2(key, out)
            _py2(value, out)
        out.write(b"u")
    elif isinstance(obj, list):
        out.write(b"](")
        for value in obj:
            _py2(value, out)
        out.write(b"e")
    elif isinstance(obj, tuple):
        out.write(b"(")
        for value in obj:
            _py2(value, out)
        out.write(b"t")
    elif isinstance(obj, np.ndarray):
        assert obj.dtype == np.uint8
        out.write(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n")
        _py2((0,), out)
        _py2(b"b", out)
        out.write(b"\x87R")  # TUPLE3, REDUCE
        out.write(b"(")      # state: (version, shape, dtype, fortran, raw bytes)
        _py2(1, out)
        _py2(tuple(obj.shape), out)
        out.write(b"cnumpy\ndtype\n")
        _py2(("u1", 0, 1), out)
        out.write(b"R")
        _py2((3, "|", None, None, None, -1, -1, 0), out)
        out.write(b"b")      # BUILD the dtype
        _py2(False, out)
        _py2(np.ascontiguousarray(obj).tobytes(), out)
        out.write(b"tb")     # the state tuple, BUILD the array
    else:
        raise TypeError(type(obj))


def pickled(obj, style):
    """``obj`` (a dict with str keys) pickled in ``style``: ``py2``, ``str`` or ``bytes`` keys."""
    if style == "py2":
        return py2_pickle(obj)
    if style == "bytes":
        obj = {key.encode("latin1"): value for key, value in obj.items()}
        if b"label_names" in obj:
            obj[b"label_names"] = [name.encode("latin1") for name in obj[b"label_names"]]
    return pickle.dumps(obj, protocol=2)


# ----------------------------------------------------------------------------------------------------------------
# CIFAR-10
# ----------------------------------------------------------------------------------------------------------------
def cifar_batches(per_batch=6, test_count=10, seed=0):
    """{batch name: (data uint8 (N, 3072), labels list)}: random pixels, labels cycling over the ten classes so
    every class is in the test batch. Test image 2 has R, G, B = 10, 20, 30 at (y=1, x=3)."""
    rng = np.random.default_rng(seed)
    batches = {}
    for index, name in enumerate(TRAIN_BATCHES):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [(index * per_batch + row) % 10 for row in range(per_batch)]
        batches[name] = (data, labels)
    data = rng.integers(0, 256, (test_count, 3072), dtype=np.uint8)
    data[2, 1 * 32 + 3], data[2, 1024 + 1 * 32 + 3], data[2, 2048 + 1 * 32 + 3] = 10, 20, 30
    batches["test_batch"] = (data, [(7 * row) % 10 for row in range(test_count)])
    return batches


def cifar_files(batches, style, label_names=CIFAR_NAMES):
    """{file name: bytes} of a cifar-10-batches-py folder (``label_names`` None: no batches.meta)."""
    files = {}
    for name, (data, labels) in batches.items():
        files[name] = pickled({"batch_label": f"{name} of 5", "labels": list(labels), "data": data,
                               "filenames": [f"img_{row}.png" for row in range(len(labels))]}, style)
    if label_names is not None:
        files["batches.meta"] = pickled({"num_cases_per_batch": 10000, "label_names": list(label_names),
                                         "num_vis": 3072}, style)
    files["readme.html"] = b"<html>CIFAR-10</html>"
    return files


def write_cifar_folder(root, files):
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(folder, name), "wb") as handle:
            handle.write(data)
    return folder


def write_cifar_archive(root, files):
    """``ROOT/cifar-10-python.tar.gz`` with the members ``cifar-10-batches-py/NAME`` (and the folder entry)."""
    os.makedirs(root, exist_ok=True)
    path = os.path.join(root, "cifar-10-python.tar.gz")
    with tarfile.open(path, "w:gz") as archive:
        folder = tarfile.TarInfo("cifar-10-batches-py")
        folder.type = tarfile.DIRTYPE
        archive.addfile(folder)
        for name, data in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def cifar_hwc(row):
    """The 32x32x3 image of a 3072-value row, by the published layout: value at c*1024 + y*32 + x."""
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    for c in range(3):
        for y in range(32):
            image[y, :, c] = row[c * 1024 + y * 32: c * 1024 + y * 32 + 32]
    return image


# ----------------------------------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST)
# ----------------------------------------------------------------------------------------------------------------
def idx_images(images, magic=2051):
    images = np.asarray(images, dtype=np.uint8)
    return struct.pack(">IIII", magic, *images.shape) + images.tobytes()


def idx_labels(labels, magic=2049):
    labels = np.asarray(labels, dtype=np.uint8)
    return struct.pack(">II", magic, len(labels)) + labels.tobytes()


def mnist_arrays(train_count=12, test_count=10, rows=28, cols=28, seed=1):
    """{split: (images (N, rows, cols), labels)}; labels cycle over the ten classes."""
    rng = np.random.default_rng(seed)
    return {split: (rng.integers(0, 256, (count, rows, cols), dtype=np.uint8),
                    np.array([(3 * i + offset) % 10 for i in range(count)], dtype=np.uint8))
            for split, count, offset in (("train", train_count, 0), ("test", test_count, 1))}


def write_idx(folder, arrays, gzipped=True):
    """The four IDX files of ``arrays`` in ``folder`` (``.gz`` when ``gzipped``); returns their paths."""
    os.makedirs(folder, exist_ok=True)
    names = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
    paths = []
    for split, (images, labels) in arrays.items():
        for name, data in zip(names[split], (idx_images(images), idx_labels(labels))):
            path = os.path.join(folder, name + (".gz" if gzipped else ""))
            with open(path, "wb") as handle:
                handle.write(gzip.compress(data) if gzipped else data)
            paths.append(path)
    return paths


# ----------------------------------------------------------------------------------------------------------------
# OCT2017
# ----------------------------------------------------------------------------------------------------------------
OCT_COUNTS = {"train": {"CNV": 2, "DME": 1, "DRUSEN": 1, "NORMAL": 3},
              "test": {"CNV": 2, "DME": 2, "DRUSEN": 2, "NORMAL": 2},
              "val": {"CNV": 1, "NORMAL": 1}}


def write_oct(root, counts=OCT_COUNTS):
    """``ROOT/{train,test,val}/<CLASS>/<CLASS>-<patient>-<n>.jpeg``: small grayscale JPEGs, plus a hidden
    ``.ipynb_checkpoints`` folder in test/ that must not count as a class."""
    for split, classes in counts.items():
        for cls, count in classes.items():
            folder = os.path.join(root, split, cls)
            os.makedirs(folder, exist_ok=True)
            for n in range(count):
                value = 40 + 50 * list(OCT_COUNTS["test"]).index(cls)
                Image.fromarray(np.full((12, 16), value, dtype=np.uint8), mode="L").save(
                    os.path.join(folder, f"{cls}-{1000 + n}-{n + 1}.jpeg"), quality=95)
    os.makedirs(os.path.join(root, "test", ".ipynb_checkpoints"), exist_ok=True)
    return root
