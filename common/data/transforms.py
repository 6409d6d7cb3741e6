"""Image and mask preprocessing, configured per method.

The PyTorch references resize PIL images with torchvision, i.e. PIL's resampling filters (which antialias when
downscaling). ``backend="pil"`` (the default) reproduces that exactly; ``backend="cv2"`` uses OpenCV (no
antialiasing), as some earlier Paddle ports did by passing numpy arrays to paddle.vision.

Masks are resized as 8-bit grayscale images with ``mask_interpolation`` (as both official codes do with
torchvision transforms on the PIL mask), then binarised with ``value / 255 > mask_threshold``. RD4AD resizes masks
bilinearly and binarises at 0.5; the official OrthoAD code passes masks through ImageNet normalisation before
thresholding at 0.5, which equals ``mask_threshold = 0.5995``; PaDiM resizes them with nearest.
"""
from dataclasses import asdict, dataclass

import cv2
import numpy as np
from PIL import Image

from common.core.errors import UserError

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

# "lanczos" is PIL's ANTIALIAS filter, which the PaDiM reference code resizes images with.
_PIL_FILTERS = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
                "lanczos": Image.LANCZOS}
_CV2_FILTERS = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC,
                "lanczos": cv2.INTER_LANCZOS4}


@dataclass(frozen=True)
class Preprocess:
    """How one method turns a file into a network input and a ground-truth mask.

    Steps, in order: optional ``pre_resize`` (shorter side, PIL bilinear, as the official OrthoAD cache),
    resize to ``resize`` (square; or shorter side when ``keep_aspect``; or exactly (height, width) when ``resize``
    is a pair, as torchvision's ``Resize((h, w))``), optional centre ``crop``, scaling to [0, 1], optional ImageNet
    normalisation. The output is ``output_shape`` (height, width); ``output_size`` is its side when square.
    """

    resize: int = 256
    crop: int = None
    pre_resize: int = None
    keep_aspect: bool = False
    interpolation: str = "bilinear"
    backend: str = "pil"
    normalize: bool = True
    mask_interpolation: str = "bilinear"
    mask_threshold: float = 0.5
    grayscale: bool = False  # read as 8-bit grayscale, stacked to three channels (OrthoAD's KolektorSDD)

    def __post_init__(self):
        if not np.isscalar(self.resize):
            # a (height, width) pair (a list after a JSON round trip); frozen, hence object.__setattr__
            if len(self.resize) != 2 or self.crop or self.keep_aspect:
                raise UserError(f"resize must be one size or a (height, width) pair without crop or keep_aspect, "
                                f"got {self.resize}")
            object.__setattr__(self, "resize", (int(self.resize[0]), int(self.resize[1])))
        if self.interpolation not in _PIL_FILTERS or self.mask_interpolation not in _PIL_FILTERS:
            raise UserError(f"interpolation must be one of {sorted(_PIL_FILTERS)}")
        if self.backend not in ("pil", "cv2"):
            raise UserError(f"resize backend must be 'pil' or 'cv2', got '{self.backend}'")

    @property
    def output_shape(self):
        """(height, width) of the network input and of the masks."""
        if self.crop or np.isscalar(self.resize):
            side = int(self.crop or self.resize)
            return side, side
        return tuple(self.resize)

    @property
    def output_size(self):
        """The side of a square output; the (height, width) pair otherwise."""
        height, width = self.output_shape
        return height if height == width else (height, width)

    def to_dict(self):
        return asdict(self)

    # -- images -------------------------------------------------------------------------------------------
    def image(self, pil_image):
        """RGB PIL image -> float32 array (3, H, W), normalised if configured."""
        array = self.resize_image(pil_image)
        array = array.astype(np.float32) / 255.0
        if self.normalize:
            array = (array - IMAGENET_MEAN) / IMAGENET_STD
        return np.ascontiguousarray(array.transpose(2, 0, 1))

    def resize_image(self, pil_image):
        """RGB PIL image -> uint8 array (H, W, 3) after pre-resize, resize and crop (for pictures too)."""
        if self.grayscale:
            pil_image = pil_image.convert("L").convert("RGB")
        if self.pre_resize:
            pil_image = _resize_pil(pil_image, self.pre_resize, True, Image.BILINEAR)
        if self.backend == "pil":
            resized = np.asarray(_resize_pil(pil_image, self.resize, self.keep_aspect,
                                             _PIL_FILTERS[self.interpolation]))
        else:
            resized = _resize_cv2(np.asarray(pil_image), self.resize, self.keep_aspect,
                                  _CV2_FILTERS[self.interpolation])
        return _center_crop(resized, self.crop)

    # -- masks --------------------------------------------------------------------------------------------
    def mask(self, pil_mask):
        """Grayscale PIL mask -> bool array (H, W): resized and cropped as an 8-bit image, then
        ``value / 255 > mask_threshold``.

        Both official codes resize the mask as an 8-bit PIL image (torchvision transforms on the PIL mask) and only
        then convert to [0, 1] and threshold; resizing in float mode would flip a few boundary pixels per class.
        """
        if pil_mask.mode != "L":
            pil_mask = pil_mask.convert("L")
        if self.pre_resize:
            pil_mask = _resize_pil(pil_mask, self.pre_resize, True, Image.BILINEAR)
        resized = np.asarray(_resize_pil(pil_mask, self.resize, self.keep_aspect,
                                         _PIL_FILTERS[self.mask_interpolation]))
        return _center_crop(resized, self.crop).astype(np.float32) / 255.0 > self.mask_threshold

    def empty_mask(self):
        return np.zeros(self.output_shape, dtype=bool)


def _target_size(width, height, size, keep_aspect):
    """(width, height) for a resize to ``size``: square, shorter side = size as torchvision's Resize(int), or
    exactly ``size`` = (height, width)."""
    if not np.isscalar(size):
        return int(size[1]), int(size[0])
    if not keep_aspect:
        return size, size
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def _resize_pil(pil_image, size, keep_aspect, resample):
    target = _target_size(pil_image.width, pil_image.height, size, keep_aspect)
    if target == pil_image.size:
        return pil_image
    return pil_image.resize(target, resample)


def _resize_cv2(array, size, keep_aspect, interpolation):
    height, width = array.shape[:2]
    target = _target_size(width, height, size, keep_aspect)
    if target == (width, height):
        return array
    return cv2.resize(array, target, interpolation=interpolation)


def _center_crop(array, crop):
    """Centre crop as torchvision's CenterCrop (offsets rounded)."""
    if not crop:
        return array
    height, width = array.shape[:2]
    if crop > height or crop > width:
        raise UserError(f"crop {crop} is larger than the resized image {width}x{height}")
    top = int(round((height - crop) / 2.0))
    left = int(round((width - crop) / 2.0))
    return array[top:top + crop, left:left + crop]

