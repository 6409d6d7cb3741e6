"""The dataset every method trains and evaluates on: the samples of any reader, preprocessed by the method."""
import numpy as np

from common.core.errors import UserError

from .images import _check_mask_size, image_size
from .samples import open_sample_image, open_sample_mask


def has_masks(samples):
    """True when every defective sample has a mask (pixel metrics are then defined)."""
    defective = [s for s in samples if s.label == 1]
    return bool(defective) and all(s.mask_paths for s in defective)


def verify_samples(samples):
    """Find what can be seen before loading: unreadable headers and masks whose size differs from their image.

    Runs when a dataset is built, so a bad file stops the command before any model work starts. Reading headers
    only, it takes milliseconds per file; damage inside the pixel data (a truncated PNG) shows when the item is
    loaded, and :class:`common.data.loader.Loader` turns it into the same one-line error.
    """
    for sample in samples:
        if sample.pixels is not None:
            continue  # an in-memory image has no file to check
        size = image_size(sample.path)
        for mask_path in sample.mask_paths:
            _check_mask_size(mask_path, image_size(mask_path, "mask"), size)


class ImageDataset:
    """Map-style dataset (works with ``paddle.io.DataLoader``) of preprocessed images, masks and labels.

    Item ``i`` is ``(image float32 (3,S,S), mask float32 (1,S,S) in {0,1}, label int64, i)``; the index lets a
    caller look up ``dataset.samples[i]`` (path, defect type) after batching.
    """

    def __init__(self, samples, preprocess, verify=True):
        if not samples:
            raise UserError("empty dataset")
        self.samples = list(samples)
        self.preprocess = preprocess
        if verify:
            verify_samples(self.samples)

    def describe(self, index):
        """The file(s) behind item ``index``, for error messages."""
        sample = self.samples[index]
        return sample.path + (f" (mask {', '.join(sample.mask_paths)})" if sample.mask_paths else "")

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        sample = self.samples[index]
        pil_image = open_sample_image(sample)
        image = self.preprocess.image(pil_image)
        if sample.mask_paths:
            mask = self.preprocess.mask(open_sample_mask(sample, pil_image.size))
        else:
            mask = self.preprocess.empty_mask()
        return image, mask[None].astype(np.float32), np.int64(sample.label), np.int64(index)

    @property
    def labels(self):
        return np.array([s.label for s in self.samples], dtype=np.int64)

    @property
    def has_masks(self):
        return has_masks(self.samples)

    def masks(self):
        """All masks as a bool array (N, H, W) (zeros for good images)."""
        out = np.zeros((len(self),) + tuple(self.preprocess.output_shape), dtype=bool)
        for i, sample in enumerate(self.samples):
            if sample.mask_paths:
                out[i] = self.preprocess.mask(open_sample_mask(sample, image_size(sample.path)))
        return out
