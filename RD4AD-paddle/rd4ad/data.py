"""RD4AD's data: the official transform, the optional calibration hold-out, and the datasets.

Official ``dataset.py``/``test.py``: PIL bilinear resize to a square (the CenterCrop that follows is a no-op),
ImageNet normalisation, no augmentation; masks resized bilinearly as 8-bit images and binarised at 0.5.
One-class sets (official ``dataset.py::load_data``): ``Resize((32, 32))`` for CIFAR-10 (normalised), MNIST and
Fashion-MNIST (not normalised), ``Resize([128, 128])`` for Retinal-OCT (not normalised); ``configs/DATASET.yaml``.
"""
from common.data.dataset import ImageDataset
from common.data.readers import test_samples
from common.data.splits import holdout_split
from common.data.transforms import Preprocess


def preprocess(config):
    """Grayscale MNIST images become RGB before the resize: the official ``img.repeat(1, 3, 1, 1)`` after it."""
    return Preprocess(resize=int(config.image_size), crop=None, interpolation="bilinear", backend="pil",
                      normalize=bool(getattr(config, "normalize", True)), mask_interpolation="bilinear",
                      mask_threshold=0.5)


def training_split(config, data_dir, cls):
    """``(train, calibration)`` samples: all good training images for training and none held out when
    ``validation_fraction`` is 0 (the official code), else a seeded hold-out for the thresholds; a format with its
    own validation images (MVTec LOCO) calibrates on those."""
    return holdout_split(config.dataset, data_dir, cls, config.fold, config.validation_fraction, config.seed)


def dataset(samples, config):
    return ImageDataset(samples, preprocess(config))


def test_dataset(config, data_dir, cls):
    return dataset(test_samples(config.dataset, data_dir, cls, config.fold), config)
