"""MVTec AD and custom-folder datasets.

Layout (MVTec AD; a custom dataset may use the same one, with ``ground_truth`` optional)::

    ROOT/CLASS/train/good/*.png
    ROOT/CLASS/test/good/*.png
    ROOT/CLASS/test/DEFECT/*.png
    ROOT/CLASS/ground_truth/DEFECT/NAME_mask.png      (NAME.png is accepted too)

A custom dataset can also be given as separate folders (:func:`folder_samples`): a train folder of good images
(directly or in ``good/``), a test folder with ``good/`` and any defect folders, and an optional mask folder.
Without masks, pixel metrics are reported as not available.

Every sample is a :class:`Sample`; order is sorted and deterministic (defect type, then file name). Grayscale,
palette, 16-bit and RGBA files become 3-channel RGB (alpha is dropped).
"""
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from .categories import resolve_classes, suggest
from .errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
GOOD = "good"


@dataclass(frozen=True)
class Sample:
    """One image: ``label`` 0 = good, 1 = defective; ``mask_path`` None for good images or missing masks."""

    path: str
    label: int
    defect_type: str
    mask_path: str = None

    @property
    def name(self):
        """``DEFECT/FILE-STEM``: unique within a class, used for output file names."""
        return f"{self.defect_type}/{os.path.splitext(os.path.basename(self.path))[0]}"


def list_images(folder):
    """Sorted image files directly inside ``folder``."""
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))


def available_classes(data_dir):
    """Class folders under ``data_dir`` (folders that contain ``train`` or ``test``)."""
    if not os.path.isdir(data_dir):
        raise UserError(f"data folder not found: {data_dir}")
    return sorted(d for d in os.listdir(data_dir)
                  if os.path.isdir(os.path.join(data_dir, d, "train"))
                  or os.path.isdir(os.path.join(data_dir, d, "test")))


def classes_for(spec, data_dir):
    """``--cls`` value -> class names present under ``data_dir`` (groups keep only what exists)."""
    available = available_classes(data_dir)
    if not available:
        raise UserError(f"no class folders (with train/ or test/) found in {data_dir}")
    classes = resolve_classes(spec, available)
    missing = [c for c in classes if c not in available]
    if missing and spec not in ("all", "textures", "objects"):
        raise UserError(f"class '{missing[0]}' not found in {data_dir}{suggest(missing[0], available)}")
    return [c for c in classes if c in available]


def class_dir(data_dir, cls):
    """``data_dir/cls``, or ``data_dir`` itself when it already is that class folder."""
    candidate = os.path.join(data_dir, cls)
    if os.path.isdir(candidate):
        return candidate
    if os.path.basename(os.path.normpath(data_dir)) == cls and os.path.isdir(os.path.join(data_dir, "train")):
        return data_dir
    if not os.path.isdir(data_dir):
        raise UserError(f"data folder not found: {data_dir}")
    present = available_classes(data_dir)
    raise UserError(f"class folder not found: {candidate}{suggest(cls, present)}")


def train_samples(data_dir, cls):
    """Good training images of a class (``CLASS/train/good``, or images directly in ``CLASS/train``)."""
    root = os.path.join(class_dir(data_dir, cls), "train")
    return _good_folder_samples(root)


def test_samples(data_dir, cls):
    """Test images of a class with labels and masks (masks from ``CLASS/ground_truth`` when present)."""
    root = class_dir(data_dir, cls)
    mask_dir = os.path.join(root, "ground_truth")
    return folder_samples(os.path.join(root, "test"), mask_dir if os.path.isdir(mask_dir) else None)


def _good_folder_samples(root):
    if not os.path.isdir(root):
        raise UserError(f"training folder not found: {root}")
    folder = os.path.join(root, GOOD) if os.path.isdir(os.path.join(root, GOOD)) else root
    files = list_images(folder)
    if not files:
        raise UserError(f"no training images in {folder}")
    return [Sample(path, 0, GOOD) for path in files]


def folder_samples(test_dir, mask_dir=None):
    """Samples of a test folder with ``good/`` and defect sub-folders; masks looked up in ``mask_dir``.

    A defect image's mask is ``MASK_DIR/DEFECT/STEM_mask.*`` or ``MASK_DIR/DEFECT/STEM.*``. When ``mask_dir`` is
    None no masks are attached; when it is given, every defect image must have a mask.
    """
    if not os.path.isdir(test_dir):
        raise UserError(f"test folder not found: {test_dir}")
    defect_types = sorted(d for d in os.listdir(test_dir) if os.path.isdir(os.path.join(test_dir, d)))
    if not defect_types:
        raise UserError(f"no sub-folders (good/ and defect types) in test folder {test_dir}")
    samples = []
    for defect in defect_types:
        for path in list_images(os.path.join(test_dir, defect)):
            if defect == GOOD:
                samples.append(Sample(path, 0, GOOD))
                continue
            mask_path = find_mask(mask_dir, defect, path) if mask_dir else None
            if mask_dir and mask_path is None:
                raise UserError(f"no mask for {path} in {os.path.join(mask_dir, defect)} "
                                "(expected STEM_mask.png); run python -m common.check_dataset")
            samples.append(Sample(path, 1, defect, mask_path))
    if not samples:
        raise UserError(f"no test images in {test_dir}")
    return samples


def find_mask(mask_dir, defect, image_path):
    """Path of the mask of ``image_path`` in ``mask_dir/defect``, or None."""
    stem = os.path.splitext(os.path.basename(image_path))[0]
    folder = os.path.join(mask_dir, defect)
    for candidate_stem in (stem + "_mask", stem):
        for ext in IMAGE_EXTENSIONS:
            candidate = os.path.join(folder, candidate_stem + ext)
            if os.path.isfile(candidate):
                return candidate
    return None


def has_masks(samples):
    """True when every defective sample has a mask (pixel metrics are then defined)."""
    defective = [s for s in samples if s.label == 1]
    return bool(defective) and all(s.mask_path for s in defective)


def _read(path, what="image", pixels=True):
    """The PIL image at ``path`` (decoded when ``pixels``, else only its header); errors name the file."""
    try:
        with Image.open(path) as image:
            if pixels:
                image.load()
            return image
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UserError(f"cannot read {what} {path}: {exc}") from None


def open_image(path):
    """Open an image as RGB; unreadable files raise ``UserError`` naming the file."""
    return to_rgb(_read(path))


def to_rgb(image):
    """Any PIL mode (L, I;16, P, LA, RGBA, CMYK) -> RGB. 16-bit images are scaled to 8 bit."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        scale = 255.0 / 65535.0 if array.max() > 255 else 1.0
        image = Image.fromarray(np.clip(array * scale, 0, 255).astype(np.uint8))
    return image.convert("RGB")


def open_mask(path, image_size=None):
    """Open a mask as 8-bit grayscale; ``image_size`` (w, h) must match the mask's size."""
    mask = _read(path, "mask")
    _check_mask_size(path, mask.size, image_size)
    return mask if mask.mode == "L" else to_rgb(mask).convert("L")


def _check_mask_size(mask_path, mask_size, image_size):
    if image_size is not None and tuple(mask_size) != tuple(image_size):
        raise UserError(f"mask {mask_path} is {mask_size[0]}x{mask_size[1]} but its image is "
                        f"{image_size[0]}x{image_size[1]}")


def image_size(path, what="image"):
    """(width, height) from the file header, without decoding the pixels; unreadable files are a ``UserError``."""
    return _read(path, what, pixels=False).size


def verify_samples(samples):
    """Find what can be seen before loading: unreadable headers and masks whose size differs from their image.

    Runs when a dataset is built, so a bad file stops the command before any model work starts. Reading headers
    only, it takes milliseconds per file; damage inside the pixel data (a truncated PNG) shows when the item is
    loaded, and :class:`common.loader.Loader` turns it into the same one-line error.
    """
    for sample in samples:
        size = image_size(sample.path)
        if sample.mask_path:
            _check_mask_size(sample.mask_path, image_size(sample.mask_path, "mask"), size)


class MVTecDataset:
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
        return sample.path + (f" (mask {sample.mask_path})" if sample.mask_path else "")

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        sample = self.samples[index]
        pil_image = open_image(sample.path)
        image = self.preprocess.image(pil_image)
        if sample.mask_path:
            mask = self.preprocess.mask(open_mask(sample.mask_path, pil_image.size))
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
        """All masks as a bool array (N, S, S) (zeros for good images)."""
        out = np.zeros((len(self),) + (self.preprocess.output_size,) * 2, dtype=bool)
        for i, sample in enumerate(self.samples):
            if sample.mask_path:
                out[i] = self.preprocess.mask(open_mask(sample.mask_path, image_size(sample.path)))
        return out


def image_paths(path):
    """An image file, or every image in a folder (recursively, sorted); ``UserError`` when none."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise UserError(f"input not found: {path}")
    found = sorted(os.path.join(d, f) for d, _, files in os.walk(path) for f in files
                   if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))
    if not found:
        raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {path}")
    return found
