"""EfficientAD's data: the reference transforms, the 90/10 split, the augmented training stream, penalty images.

nelson1425 ``efficientad.py``: ``Resize((256, 256))`` (PIL bilinear) + ImageNet normalisation for every network
input; the autoencoder branch's copy of a training image is first colour-jittered at full resolution by one of
``ColorJitter(brightness=0.2)``, ``(contrast=0.2)``, ``(saturation=0.2)`` chosen uniformly (``RandomChoice``), then
resized. The penalty image is ``Resize((512, 512))`` -> ``RandomGrayscale(0.3)`` -> ``CenterCrop(256)``.
``pretraining.py``: ``RandomGrayscale(0.1)``, then the same image at 512 px for the extractor and 256 px for the PDN.

Random draws (shuffling, jitter, grayscale) come from :class:`ShuffledStream`, one NumPy generator per stream whose
state is saved with the training state, so an interrupted run resumes bit-identically. The draws are made in the
main thread before the items are loaded, so loader threads cannot change them.
"""
import os

import numpy as np
from PIL import Image, ImageEnhance

from common.core.errors import UserError
from common.data.dataset import ImageDataset
from common.data.images import image_paths, open_image
from common.data.readers import test_samples, train_samples, validation_samples
from common.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Preprocess

JITTER_STRENGTH = 0.2
# ColorJitter's PIL implementations (torchvision.transforms.functional_pil): adjust_brightness / adjust_contrast /
# adjust_saturation are ImageEnhance.Brightness / Contrast / Color with the drawn factor.
JITTER_ENHANCERS = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)
JITTER_NAMES = ("brightness", "contrast", "saturation")
PENALTY_GRAYSCALE, PRETRAIN_GRAYSCALE = 0.3, 0.1
NO_PENALTY = (None, "", "none")


def preprocess(config):
    """Resize to 256 (PIL bilinear), ImageNet normalisation; masks (thresholds only) bilinear, > 0.5."""
    return Preprocess(resize=int(config.image_size), crop=None, interpolation="bilinear", backend="pil",
                      normalize=True, mask_interpolation="bilinear", mask_threshold=0.5)


def to_network_input(pil_image, size):
    """``transforms.Resize((size, size))`` + ``ToTensor`` + ImageNet ``Normalize``: float32 (3, size, size)."""
    array = np.asarray(pil_image.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
    return np.ascontiguousarray(((array - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1))


def color_jitter(pil_image, choice, factor):
    """One of torchvision's ``ColorJitter(brightness|contrast|saturation=0.2)`` with the drawn ``factor``."""
    return JITTER_ENHANCERS[int(choice)](pil_image).enhance(float(factor))


def draw_jitter(rng, count):
    """``RandomChoice`` of the three jitters (uniform) and each one's factor ~ U[0.8, 1.2]: (count, 2) float64."""
    choices = rng.integers(0, len(JITTER_ENHANCERS), size=count)
    factors = rng.uniform(1 - JITTER_STRENGTH, 1 + JITTER_STRENGTH, size=count)
    return np.stack([choices, factors], axis=1)


def draw_grayscale(probability):
    def draw(rng, count):
        return (rng.random(count) < probability).astype(np.float64)[:, None]
    return draw


def grayscale(pil_image):
    """``RandomGrayscale``'s conversion: ITU-R 601-2 luma (PIL ``L``) copied into three channels."""
    return pil_image.convert("L").convert("RGB")


# -- splits ------------------------------------------------------------------------------------------------------
def random_validation_split(samples, fraction=0.1, seed=42):
    """``(train, validation)`` with ``int((1 - fraction) * n)`` training images, as the reference's
    ``train_size = int(0.9 * len(full_train_set))``.

    The reference draws the split with ``torch.utils.data.random_split(..., torch.Generator().manual_seed(42))``,
    a permutation that cannot be reproduced without torch; this uses NumPy's ``default_rng(seed).permutation``
    (so the same sizes, other images; ``--val_list`` gives an exact list). Both sides keep the files' order.
    """
    samples = list(samples)
    n = len(samples)
    train_size = int((1.0 - float(fraction)) * n)
    if n < 2 or not 0 < train_size < n:
        raise UserError(f"need at least one training and one validation image: {n} training image(s) with "
                        f"validation_fraction {fraction}")
    validation = set(np.random.default_rng(seed).permutation(n)[train_size:].tolist())
    return ([s for i, s in enumerate(samples) if i not in validation],
            [s for i, s in enumerate(samples) if i in validation])


def read_val_list(path):
    """Names in a validation list file: one per line; blank lines and ``#`` comments are skipped."""
    if not os.path.isfile(path):
        raise UserError(f"--val_list: file not found: {path}")
    with open(path, encoding="utf-8") as handle:
        names = [line.strip() for line in handle if line.strip() and not line.strip().startswith("#")]
    if not names:
        raise UserError(f"--val_list: {path} names no image")
    return names


def listed_validation_split(samples, names, class_root, list_path="--val_list"):
    """``(train, validation)``: the samples named in ``names`` (``train/good/012.png`` relative to the class folder,
    or a bare file name) are the validation images, the others the training images."""
    by_relative = {os.path.relpath(s.path, class_root).replace(os.sep, "/"): s for s in samples}
    by_name = {}
    for s in samples:
        by_name.setdefault(os.path.basename(s.path), []).append(s)
    chosen = []
    for name in names:
        key = name.replace("\\", "/")
        key = key[2:] if key.startswith("./") else key
        if key in by_relative:
            chosen.append(by_relative[key])
        elif "/" not in key and len(by_name.get(key, ())) == 1:
            chosen.append(by_name[key][0])
        else:
            raise UserError(f"{list_path}: '{name}' is not a training image of {class_root} (give train/good/NAME "
                            "or a file name)")
    chosen_paths = {s.path for s in chosen}
    train = [s for s in samples if s.path not in chosen_paths]
    if not train:
        raise UserError(f"{list_path} names every training image: nothing is left to train on")
    return train, [s for s in samples if s.path in chosen_paths]


def training_split(config, data_dir, cls):
    """``(train, validation)`` samples of ``cls``: the format's own validation images when it has them (MVTec LOCO's
    ``validation/good``, as nelson1425 trains on LOCO: every training image trains), else ``--val_list`` when given,
    else the seeded 90/10 split."""
    samples = train_samples(config.dataset, data_dir, cls, config.fold)
    validation = validation_samples(config.dataset, data_dir, cls, config.fold)
    if validation:
        return samples, validation
    if config.val_list:
        class_root = os.path.join(data_dir, cls) if os.path.isdir(os.path.join(data_dir, cls)) else data_dir
        return listed_validation_split(samples, read_val_list(config.val_list), class_root, config.val_list)
    return random_validation_split(samples, config.validation_fraction, config.seed)


def dataset(samples, config):
    return ImageDataset(samples, preprocess(config))


def test_dataset(config, data_dir, cls):
    return dataset(test_samples(config.dataset, data_dir, cls, config.fold), config)


def penalty_paths(penalty_dir):
    """Images of the penalty folder (recursive), or None when the penalty is off; a missing folder is an error."""
    if penalty_dir in NO_PENALTY:
        return None
    if not os.path.isdir(penalty_dir):
        raise UserError(f"penalty folder not found: {penalty_dir} (give an ImageNet train folder, or leave "
                        "--penalty_dir unset to train without the penalty)")
    return image_paths(penalty_dir)


# -- item datasets driven by a schedule of (index, draws...) -----------------------------------------------------
class _ScheduledItems:
    """Map-style dataset over a schedule: item ``i`` is built from ``entries[i]`` = (source index, draws...)."""

    def __init__(self, paths, entries):
        self.paths, self.entries = paths, entries

    def __len__(self):
        return len(self.entries)

    def describe(self, index):
        return self.paths[int(self.entries[index][0])]

    def _open(self, index):
        return open_image(self.paths[int(self.entries[index][0])])


class TrainingItems(_ScheduledItems):
    """(image for the student-teacher branch, colour-jittered image for the autoencoder branch), both (3,S,S)."""

    def __init__(self, paths, entries, size):
        super().__init__(paths, entries)
        self.size = size

    def __getitem__(self, index):
        _, choice, factor = self.entries[index]
        image = self._open(index)
        return to_network_input(image, self.size), to_network_input(color_jitter(image, choice, factor), self.size)


class PenaltyItems(_ScheduledItems):
    """Penalty image: resize to 2S, grayscale when drawn, centre crop S, normalise: (3, S, S)."""

    def __init__(self, paths, entries, size):
        super().__init__(paths, entries)
        self.size = size

    def __getitem__(self, index):
        _, gray = self.entries[index]
        image = self._open(index).resize((2 * self.size, 2 * self.size), Image.BILINEAR)
        if gray:
            image = grayscale(image)
        offset = self.size // 2  # CenterCrop(S) of a 2S image
        image = image.crop((offset, offset, offset + self.size, offset + self.size))
        array = np.asarray(image, dtype=np.float32) / 255.0
        return (np.ascontiguousarray(((array - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)),)


class PretrainingItems(_ScheduledItems):
    """Teacher distillation: (extractor image at ``2 S``, PDN image at ``S``) of the same grayscale-drawn image."""

    def __init__(self, paths, entries, size):
        super().__init__(paths, entries)
        self.size = size

    def __getitem__(self, index):
        _, gray = self.entries[index]
        image = self._open(index)
        if gray:
            image = grayscale(image)
        return to_network_input(image, 2 * self.size), to_network_input(image, self.size)


class ShuffledStream:
    """Endless shuffled passes over ``count`` items (a DataLoader with ``shuffle=True`` wrapped as an infinite
    iterator), each item with its augmentation draws ``draw(rng, count)``; resumable.

    :meth:`take` returns the next entries ``[index, draw...]``; :meth:`state` / :meth:`set_state` save and restore
    the position (the generator state at the start of the current pass, and how far into it).
    """

    def __init__(self, count, seed, draw=None):
        self.count, self.draw = int(count), draw
        self.rng = np.random.default_rng(seed)
        self.pass_state, self.entries, self.position = None, None, 0

    def _new_pass(self):
        self.pass_state = self.rng.bit_generator.state
        order = self.rng.permutation(self.count).astype(np.float64)[:, None]
        draws = self.draw(self.rng, self.count) if self.draw else np.zeros((self.count, 0))
        self.entries, self.position = np.concatenate([order, draws], axis=1), 0

    def take(self, size):
        """Up to ``size`` next entries, never crossing a pass boundary (like the last batch of a DataLoader)."""
        if self.entries is None or self.position >= self.count:
            self._new_pass()
        chunk = self.entries[self.position:self.position + size]
        self.position += len(chunk)
        return [tuple(row) for row in chunk]

    def state(self):
        return {"pass_state": self.pass_state, "position": self.position,
                "rng_state": self.rng.bit_generator.state}

    def set_state(self, state):
        if state["pass_state"] is None:
            self.rng.bit_generator.state = state["rng_state"]
            self.pass_state, self.entries, self.position = None, None, 0
            return
        self.rng.bit_generator.state = state["pass_state"]
        self._new_pass()
        self.position = int(state["position"])


def jitter_stream(count, seed):
    return ShuffledStream(count, seed, draw_jitter)


def grayscale_stream(count, seed, probability):
    return ShuffledStream(count, seed, draw_grayscale(probability))
