"""MVTec LOCO AD figures for every method, and anomaly maps written as MVTec's LOCO evaluator reads them.

MVTec's evaluator compares TIFF maps at each image's original size with the full-size ground-truth channels, so
the maps of the method (at the network's size) are first brought back to the image: the centre crop (when the
method crops) is put back into a canvas of the resized image filled with the map's minimum, and the canvas is
resized bilinearly (``align_corners=False``, as EfficientAD's ``F.interpolate`` before writing its TIFFs) to the
image's width and height. The figures are then :func:`common.metrics.spro.loco_metrics` of those maps.
"""
import io
import os

import numpy as np

from common.core.errors import UserError
from common.core.files import atomic_write_bytes
from common.data.readers.mvtec_loco import defect_channels, read_defects_config
from common.data.samples import sample_size
from common.metrics import spro
from common.networks.postprocess import resize_to_image

DATASET = "mvtec_loco"
SEED = 0          # seeds the initial thresholds' sample above 10 million pooled scores (unseeded in MVTec's code)
MAP_FORMATS = ("tiff",)


def metric_name(kind, subset, limit=None):
    """``au_spro_logical@0.05``, ``au_spro_mean@1.0``, ``image_auroc_structural``, ``image_auroc_all``."""
    short = subset.replace("_anomalies", "")
    return f"au_spro_{short}@{limit}" if kind == "au_spro" else f"image_auroc_{short}"


PROTOCOLS = {
    "au_spro": "MVTec LOCO AD evaluator: normalised area under the (FPR, mean sPRO) curve up to the limit, "
               "saturation per defect from defects_config.json, SUBSET and good test images, maps at the image size",
    "image_auroc": "MVTec LOCO AD evaluator: ROC of the maps' maxima at the image size (official tie handling), "
                   "SUBSET against the good test images",
}


def _canvas_size(preprocess, width, height):
    """(width, height) of the resized image the network's input was cropped from."""
    size = int(getattr(preprocess, "resize", 0) or 0)
    if not size:
        return None
    if not getattr(preprocess, "keep_aspect", False):
        return size, size
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def map_to_image(amap, preprocess, image_size):
    """A network-size map ``amap`` (S, S) as a float32 map of the image's ``(width, height)``."""
    amap = np.asarray(amap, dtype=np.float32)
    crop = getattr(preprocess, "crop", None)
    canvas_size = _canvas_size(preprocess, *image_size)
    if crop and canvas_size and canvas_size != (crop, crop):
        if amap.shape != (crop, crop):      # a map at another size than the network input: to the crop first
            amap = resize_to_image(amap, (crop, crop))
        width, height = canvas_size
        canvas = np.full((height, width), amap.min(), dtype=np.float32)
        top, left = int(round((height - crop) / 2.0)), int(round((width - crop) / 2.0))
        canvas[top:top + crop, left:left + crop] = amap
        amap = canvas
    return np.ascontiguousarray(resize_to_image(amap, image_size), dtype=np.float32)


class ImageSizeMaps:
    """The maps of a test set at each image's original size, made one at a time when indexed (a LOCO class at
    1600x1280 would not fit in memory twice)."""

    def __init__(self, samples, maps, preprocess):
        self.samples, self.maps, self.preprocess = list(samples), maps, preprocess
        self.sizes = [sample_size(s) for s in self.samples]

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return map_to_image(self.maps[index], self.preprocess, self.sizes[index])

    def __iter__(self):
        return (self[i] for i in range(len(self)))


class ImageChannels:
    """The ground-truth channels of each test image (:func:`defect_channels`), read from disk when indexed, so the
    full-size masks of a whole object are never held at once."""

    def __init__(self, samples, defects, sizes):
        self.samples, self.defects, self.sizes = list(samples), defects, list(sizes)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        return defect_channels(self.samples[index], self.defects, self.sizes[index])

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def class_folder(sample):
    """``ROOT/OBJECT`` of a LOCO test image ``ROOT/OBJECT/test/SUBSET/NNN.png``."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(sample.path))))


def loco_metrics(dataset, maps, seed=SEED):
    """``(metrics, protocols)``: the MVTec LOCO AD figures of a test set (``dataset.samples``, their ``maps`` at the
    network size) under the names of :func:`metric_name`."""
    samples = dataset.samples
    folders = {class_folder(s) for s in samples}
    if len(folders) != 1:
        raise UserError(f"MVTec LOCO evaluation needs the test images of one object, got {sorted(folders)}")
    defects = read_defects_config(folders.pop())
    full = ImageSizeMaps(samples, maps, getattr(dataset, "preprocess", None))
    channels = ImageChannels(samples, defects, full.sizes)   # a bad channel stops here, before anything is written
    result = spro.loco_metrics(full, channels, [s.defect_type for s in samples], seed=seed)
    metrics, protocols = {}, {}
    for subset, by_limit in result["au_spro"].items():
        for limit, value in by_limit.items():
            name = metric_name("au_spro", subset, limit)
            metrics[name] = value
            protocols[name] = _protocol("au_spro", subset)
    for subset, value in result["image_auroc"].items():
        name = metric_name("image_auroc", subset)
        metrics[name] = value
        protocols[name] = _protocol("image_auroc", subset)
    return metrics, protocols


def _protocol(kind, subset):
    if subset == "mean":
        return PROTOCOLS[kind].replace("SUBSET and good test images", "mean of logical and structural").replace(
            "SUBSET against the good test images", "mean of logical and structural")
    what = {"all": "all anomalous"}.get(subset, subset)
    return PROTOCOLS[kind].replace("SUBSET", what)


def tiff_bytes(amap):
    """A float32 (H, W) map as TIFF file bytes (what ``tifffile.imread`` gives back unchanged)."""
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.asarray(amap, dtype=np.float32))
    return buffer.getvalue()


def save_maps(dataset, maps, maps_dir, cls, fmt="tiff"):
    """Write each test image's map at the image's size as ``MAPS_DIR/CLS/test/SUBSET/STEM.tiff`` (the layout
    of MVTec's LOCO evaluator: ``--anomaly_maps_dir MAPS_DIR --object_name CLS``), atomically; returns the paths."""
    if fmt not in MAP_FORMATS:
        raise UserError(f"--save_maps must be one of {', '.join(MAP_FORMATS)}, got {fmt!r}")
    full = ImageSizeMaps(dataset.samples, maps, getattr(dataset, "preprocess", None))
    paths = []
    for sample, amap in zip(dataset.samples, full):
        path = os.path.join(maps_dir, cls, "test", *sample.name.split("/")) + ".tiff"
        atomic_write_bytes(path, tiff_bytes(amap))
        paths.append(path)
    return paths
