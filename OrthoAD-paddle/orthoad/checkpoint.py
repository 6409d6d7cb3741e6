"""Save and load fitted OrthoAD / PaDiM class models: ``OUTPUT_DIR/CLASS/`` -> (detector, config, thresholds).

Files of a class: ``projection.npy`` W (c, k), ``mean.npy`` (P, k), ``precision_factor.npy`` A (P, k, k) with
precision AᵀA (float32, P = H·W positions row-major), ``model.json`` (the :class:`orthoad.config.Config` plus the
fit's facts) and ``thresholds.json``.

Model arrays are ``.npy`` files, written atomically and read back in row chunks.

The precision factor of WRN50 k=300 is 4096 × 300 × 300 float32 = 1.47 GB. ``np.save`` streams it to disk without
a copy, and :class:`NpyRows` reads slices of rows with plain file reads (no memory map, whose pages would count
towards the process's resident memory), so loading a model never holds two copies of it.
"""
import json
import os

import numpy as np
import paddle

from common.core.checkpoint import class_folder
from common.core.config import config_from_dict
from common.core.errors import UserError
from common.core.files import atomic_save, atomic_write_json
from common.evaluation.thresholds import read_thresholds

from .config import Config
from .detector import OrthoADDetector
from .model import MahalanobisScorer, ProjectedEmbedding

PROJECTION_FILE, MEAN_FILE, FACTOR_FILE, MODEL_FILE = "projection.npy", "mean.npy", "precision_factor.npy", \
    "model.json"
CHECKPOINT = MODEL_FILE  # the file that says a class folder holds a fitted model (the arrays beside it)
METHOD, FORMAT = "OrthoAD", 1
ROWS_PER_WRITE = 256


def save_array(path, array):
    """Write ``array`` (NumPy, or a Paddle tensor) to ``path`` as ``.npy`` atomically, ``ROWS_PER_WRITE`` rows at a
    time, so that a tensor is never copied whole into NumPy (the WRN50 factor is 1.5 GB)."""
    shape = tuple(array.shape)

    def rows(start):
        chunk = array[start:start + ROWS_PER_WRITE]
        return np.ascontiguousarray(chunk.numpy() if hasattr(chunk, "numpy") else chunk, dtype=np.float32)

    def write(tmp):
        with open(tmp, "wb") as handle:
            np.lib.format.write_array_header_1_0(handle, {"descr": np.lib.format.dtype_to_descr(np.dtype("float32")),
                                                          "fortran_order": False, "shape": shape})
            for start in range(0, shape[0], ROWS_PER_WRITE):
                handle.write(rows(start).tobytes())

    atomic_save(write, path)


class NpyRows:
    """Lazy view of a C-ordered ``.npy`` file: ``shape``, ``dtype`` and ``rows[a:b]`` read from disk."""

    def __init__(self, path):
        if not os.path.isfile(path):
            raise UserError(f"model file not found: {path}")
        self.path = path
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(handle)
            self.offset = handle.tell()
        if fortran:
            raise UserError(f"{path} is stored in Fortran order")
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.row_items = int(np.prod(self.shape[1:], dtype=np.int64))

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, index):
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError("NpyRows supports contiguous row slices only")
        start, stop, _ = index.indices(self.shape[0])
        count = max(stop - start, 0) * self.row_items
        with open(self.path, "rb") as handle:
            handle.seek(self.offset + start * self.row_items * self.dtype.itemsize)
            data = np.fromfile(handle, dtype=self.dtype, count=count)
        return data.reshape((max(stop - start, 0),) + self.shape[1:])

    def read(self):
        """The whole array."""
        return self[:]


# -- class models --------------------------------------------------------------------------------------------------
def exists(class_dir):
    return os.path.isfile(os.path.join(class_dir, MODEL_FILE))


def build_embedder(config, projection, backbone_weights=None):
    """Backbone + projection; random backbone weights are drawn from the seed so fit and eval share them."""
    paddle.seed(config.seed)
    return ProjectedEmbedding(config.backbone, projection, config.input_shape,
                              weights=backbone_weights or config.backbone_weights)


def save(path, detector, config, meta):
    """Write the arrays of ``detector`` (W, the mean, the precision factor) and ``model.json`` (the config and
    ``meta``, e.g. the number of fitted images) into the class folder ``path`` (or the folder of a file in it);
    ``model.json`` is written last, so a folder with it holds a whole model. Returns the ``model.json`` path."""
    from common.core.config import to_dict

    class_dir = path if os.path.isdir(path) or not os.path.splitext(path)[1] else os.path.dirname(path)
    save_array(os.path.join(class_dir, PROJECTION_FILE), detector.embedder.projection)
    save_array(os.path.join(class_dir, MEAN_FILE), detector.scorer.mean.numpy().T)  # stored (k, P), saved (P, k)
    save_array(os.path.join(class_dir, FACTOR_FILE), detector.scorer.factor)
    model_file = os.path.join(class_dir, MODEL_FILE)
    atomic_write_json(model_file, {"config": to_dict(config), "fit": dict(meta, method=METHOD, format=FORMAT)})
    return model_file


def read_model_file(class_dir):
    path = os.path.join(class_dir, MODEL_FILE)
    if not os.path.isfile(path):
        raise UserError(f"no fitted model in {class_dir} (missing {MODEL_FILE}): train first "
                        "(python main.py --mode train ...)")
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
        return config_from_dict(Config, record["config"]), record.get("fit", {})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None


def build_detector(config, projection, mean, factor, backbone_weights=None):
    """The detector of a fitted model: W, the mean (P, k) and the precision factor (P, k, k; a NumPy array, used
    without a copy, or :class:`NpyRows` read in chunks)."""
    embedder = build_embedder(config, projection, backbone_weights)
    scorer = MahalanobisScorer(mean, factor, config.grid)
    detector = OrthoADDetector(embedder, scorer, config.input_shape, config.sigma)
    detector.eval()
    return detector


def load(path, backbone_weights=None):
    """``(detector in eval mode, config, thresholds)`` of a class folder (or a file inside it)."""
    class_dir = class_folder(path)
    config, _ = read_model_file(class_dir)
    projection = NpyRows(os.path.join(class_dir, PROJECTION_FILE)).read()
    mean = NpyRows(os.path.join(class_dir, MEAN_FILE)).read()
    detector = build_detector(config, projection, mean, NpyRows(os.path.join(class_dir, FACTOR_FILE)),
                              backbone_weights)
    return detector, config, read_thresholds(class_dir)
