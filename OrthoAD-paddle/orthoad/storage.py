"""Model arrays as ``.npy`` files, written atomically and read back in row chunks.

The precision factor of WRN50 k=300 is 4096 × 300 × 300 float32 = 1.47 GB. ``np.save`` streams it to disk without
a copy, and :class:`NpyRows` reads slices of rows with plain file reads (no memory map, whose pages would count
towards the process's resident memory), so loading a model never holds two copies of it.
"""
import os

import numpy as np

from common.errors import UserError
from common.results import atomic_save


def save_array(path, array):
    """Write ``array`` to ``path`` (.npy) atomically."""
    def write(tmp):
        with open(tmp, "wb") as handle:
            np.save(handle, np.ascontiguousarray(array))
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
