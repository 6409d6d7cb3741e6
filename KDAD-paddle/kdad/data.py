"""KDAD's data, as the official ``dataloader.py``: for MVTec (``ImageFolder``) and Retinal-OCT a PIL bilinear resize
to 128x128, ``ToTensor`` (values in [0, 1]), no ImageNet normalisation, no augmentation; for MNIST/Fashion-MNIST
the same at 32x32 (one channel repeated to three); for CIFAR-10 ``Resize((256, 256), ANTIALIAS)``,
``CenterCrop(224)`` and ImageNet normalisation. The options ``resize``, ``interpolation`` and ``normalize`` carry
these; ``configs/DATASET.yaml`` sets them per dataset.

Localisation ground truth (official ``load_localization_data``): the mask loaded as RGB, resized bilinearly to the
input size and averaged over its channels -> a *soft* mask in [0, 1] (:func:`soft_masks`). The standard metrics use
the binarised mask (``> 0.5``) of the same resize.
"""
import numpy as np
from PIL import Image

from common.data.dataset import ImageDataset
from common.data.readers import retina, test_samples
from common.data.samples import open_sample_mask, sample_size
from common.data.splits import calibration_split, holdout_split
from common.data.transforms import Preprocess


def preprocess(config):
    """The official transform of ``config.dataset`` as the config states it (``configs/DATASET.yaml``): PIL resize
    (``interpolation``) to ``resize`` then centre crop to ``image_size``, or straight to ``image_size``; [0, 1];
    ImageNet normalisation when ``normalize``. Grayscale MNIST images become RGB before the resize, which equals
    the official resize of the one channel followed by ``X.repeat(1, 3, 1, 1)`` (each channel resized alike)."""
    resize = getattr(config, "resize", None)
    return Preprocess(resize=int(resize or config.image_size), crop=int(config.image_size) if resize else None,
                      interpolation=getattr(config, "interpolation", "bilinear"), backend="pil",
                      normalize=bool(getattr(config, "normalize", False)), mask_interpolation="bilinear",
                      mask_threshold=0.5)


def training_split(config, data_dir, cls):
    """``(train, calibration)`` samples: all good training images for training and none held out when
    ``validation_fraction`` is 0 (the official code), else a seeded hold-out for the thresholds; a format with its
    own validation images (MVTec LOCO) calibrates on those."""
    if getattr(config, "train_classes", "normal") == "all":
        # the official Retinal-OCT run: ImageFolder over the whole OCT2017/train, every class (labelled 1 when not
        # the normal class; the trainer calibrates the thresholds on the normal ones only)
        samples = retina.train(data_dir, cls, config.fold, all_classes=True)
        train, calibration = calibration_split(samples, config.validation_fraction, config.seed)
        return train, [sample for sample in calibration if sample.label == 0]
    return holdout_split(config.dataset, data_dir, cls, config.fold, config.validation_fraction, config.seed)


def dataset(samples, config):
    return ImageDataset(samples, preprocess(config))


def test_dataset(config, data_dir, cls):
    return dataset(test_samples(config.dataset, data_dir, cls, config.fold), config)


def soft_masks(samples, size):
    """(N, size, size) float32 soft masks of ``samples`` (zeros for samples without a mask).

    A grayscale mask converted to RGB has three equal channels, so the official RGB mean equals the 8-bit
    grayscale mask resized with PIL bilinear and divided by 255.
    """
    out = np.zeros((len(samples), size, size), dtype=np.float32)
    for i, sample in enumerate(samples):
        if sample.mask_paths:
            mask = open_sample_mask(sample, sample_size(sample))
            out[i] = np.asarray(mask.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
    return out
