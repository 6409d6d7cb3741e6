"""OrthoAD / PaDiM data: the three preprocessing pipelines, the official fit split, datasets.

- ``orthoad`` (jnhwkim/orthoad dataset.py): every image PIL-resized to shorter side 320 (the official cache), then
  Resize(256) + CenterCrop(256), ImageNet normalisation. Masks go through the same 8-bit pipeline *including* the
  ImageNet normalisation before ``> 0.5``, i.e. ``value / 255 > 0.5995``.
- ``padim`` (xiahaifeng1995 main.py): PIL Lanczos (ANTIALIAS) Resize(256) + CenterCrop(224); masks Resize(256,
  NEAREST) + CenterCrop(224).
- ``simple``: square resize to ``image_size`` only, masks bilinear > 0.5 (an ablation).
- ``kolektor`` (jnhwkim/orthoad dataset.py, ``KolektorSDD`` / ``KolektorSDD2``): PIL bilinear resize straight to
  ``--scale`` (H x W, default 704 x 256; ``T.Resize((h, w))``), no crop, ImageNet normalisation. KolektorSDD is
  read as 8-bit grayscale and stacked to three channels (``convert('L')``); KolektorSDD2 as RGB.
  The mask is resized the same way and stored as an integer, so only pixels whose resized 8-bit value is 255 stay
  defective (``mask_threshold`` 254.5 / 255). The official classes also label each image by that resized mask, and
  train on the train images whose resized mask is empty: an image whose thin defect vanishes at 704 x 256 is
  defect-free there, and may be fitted (``resized_labels``, on by default; benchmarks-spec pitfall P9).
"""
from common.core.errors import UserError
from common.data.dataset import ImageDataset
from common.data.images import image_size
from common.data.readers import test_samples, train_samples, validation_samples
from common.data.readers.kolektor import LABELLED_TRAIN
from common.data.samples import GOOD, Sample, open_sample_mask
from common.data.transforms import Preprocess


def preprocess(config):
    if config.pipeline == "kolektor":
        return Preprocess(resize=config.input_shape, mask_threshold=config.mask_threshold,
                          grayscale=config.dataset == "kolektor")
    size = int(config.image_size)
    if config.pipeline == "orthoad":
        return Preprocess(resize=size, crop=size, pre_resize=round(size * 1.25), keep_aspect=True,
                          mask_threshold=config.mask_threshold)
    if config.pipeline == "padim":
        return Preprocess(resize=round(size * 256 / 224), crop=size, keep_aspect=True, interpolation="lanczos",
                          mask_interpolation="nearest", mask_threshold=config.mask_threshold)
    return Preprocess(resize=size, mask_threshold=config.mask_threshold)


def official_split(samples):
    """The official OrthoAD split: fit on files whose sorted index is not divisible by 10; hold out the rest.

    Returns ``(fit_samples, held_out_samples)``; ``samples`` are sorted (as :mod:`common.data.readers.mvtec` returns them).
    """
    fit = [s for i, s in enumerate(samples) if i % 10 != 0]
    held_out = [s for i, s in enumerate(samples) if i % 10 == 0]
    return fit, held_out


def resized_labels(samples, config):
    """``samples`` labelled as the official KolektorSDD classes label them: defective only when the mask resized
    to the input size keeps a defect pixel. Returns ``(samples, names of the images that became defect-free)``."""
    transform = preprocess(config)
    labelled, vanished = [], []
    for sample in samples:
        if sample.label and sample.mask_paths and \
                not transform.mask(open_sample_mask(sample, image_size(sample.path))).any():
            sample = Sample(sample.path, 0, GOOD, name=sample.name)  # its resized mask is empty
            vanished.append(sample.name)
        labelled.append(sample)
    if vanished:
        height, width = config.input_shape
        print(f"{len(vanished)} image(s) whose defect vanishes at {height}x{width} count as defect-free, as in the "
              f"official code (--resized_labels false: by the mask files): {', '.join(vanished[:5])}"
              + (" ..." if len(vanished) > 5 else ""))
    return labelled, vanished


def _train_samples(config, data_dir, cls):
    if config.resized_labels and config.dataset in LABELLED_TRAIN:
        everything, _ = resized_labels(LABELLED_TRAIN[config.dataset](data_dir, cls, config.fold), config)
        samples = [s for s in everything if s.label == 0]
        if not samples:
            raise UserError(f"no defect-free training images of {cls} in {data_dir}")
        return samples
    return train_samples(config.dataset, data_dir, cls, config.fold)


def training_split(config, data_dir, cls):
    """``(fit, calibration)``: ``official`` fits on the 90 %% split and calibrates the thresholds on the 10 %% it
    holds out; ``all`` fits on every image and calibrates on that same 10 %% (then not held out). A format with its
    own validation images (MVTec LOCO) fits on every training image and calibrates on those."""
    samples = _train_samples(config, data_dir, cls)
    validation = validation_samples(config.dataset, data_dir, cls, config.fold)
    if validation:
        return samples, validation
    fit, held_out = official_split(samples)
    if config.train_split == "all":
        return list(samples), held_out
    if not fit:
        raise UserError(f"the official 90 % split of {len(samples)} training image(s) is empty; "
                        "use --train_split all")
    return fit, held_out


def dataset(samples, config):
    return ImageDataset(samples, preprocess(config))


def test_dataset(config, data_dir, cls):
    samples = test_samples(config.dataset, data_dir, cls, config.fold)
    if config.resized_labels:
        samples, _ = resized_labels(samples, config)
    return dataset(samples, config)
