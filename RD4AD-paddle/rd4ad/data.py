"""RD4AD's data: the official transform, the optional calibration hold-out, and the datasets.

Official ``dataset.py``/``test.py``: PIL bilinear resize to a square (the CenterCrop that follows is a no-op),
ImageNet normalisation, no augmentation; masks resized bilinearly as 8-bit images and binarised at 0.5.
"""
from common.mvtec import MVTecDataset, test_samples, train_samples
from common.splits import calibration_split
from common.transforms import Preprocess


def preprocess(config):
    return Preprocess(resize=int(config.image_size), crop=None, interpolation="bilinear", backend="pil",
                      normalize=True, mask_interpolation="bilinear", mask_threshold=0.5)


def training_split(config, data_dir, cls):
    """``(train, calibration)`` samples: all good training images for training and none held out when
    ``calibration_fraction`` is 0 (the official code), else a seeded hold-out for the thresholds."""
    return calibration_split(train_samples(data_dir, cls), config.calibration_fraction, config.seed)


def dataset(samples, config):
    return MVTecDataset(samples, preprocess(config))


def test_dataset(config, data_dir, cls):
    return dataset(test_samples(data_dir, cls), config)
