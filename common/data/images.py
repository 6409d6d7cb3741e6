"""Image and mask files: listing them and opening them as RGB / 8-bit images, with one-line errors naming the file.

Grayscale, palette, 16-bit and RGBA files become 3-channel RGB (alpha is dropped).
"""
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from common.core.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def list_images(folder):
    """Sorted image files directly inside ``folder``."""
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))


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
