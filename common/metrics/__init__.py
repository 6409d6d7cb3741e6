"""Evaluation metrics shared by the four methods: AUROC, AU-PRO (official MVTec AD), F1, thresholds.

Inputs
    ``labels``  (N,) image labels, 0 = normal, 1 = defective (bool or integer).
    ``scores``  (N,) image anomaly scores.
    ``masks``   (N, H, W) ground-truth masks. bool masks are used as they are; integer masks mark a defect where the
                value is > 0 (so 0/1 and 0/255 both work); float masks where the value is > 0.5 (masks resized to
                [0, 1] with interpolation, as RD4AD binarises them).
    ``maps``    (N, H, W) anomaly maps, any real dtype; float maps are used in their own dtype so ties are the ties
                of the stored values.
    ``names``   optional list of N image paths; validation errors then name the file, not only the index.

A metric that is not defined for the input (one class only, no defect region) returns ``None``; a user mistake
(shape mismatch, NaN or Inf, bad option) raises :class:`common.core.errors.UserError`. See ``docs/metrics.md``.
"""
from common.core.errors import UserError

from .auroc import image_auroc, pixel_auroc, precision_recall_f1
from .pro import au_pro
from .thresholds import calibrate_threshold

PROTOCOLS = ("image_auroc", "pixel_auroc", "au_pro")

__all__ = ["PROTOCOLS", "au_pro", "calibrate_threshold", "evaluate", "image_auroc", "pixel_auroc",
           "precision_recall_f1"]


def evaluate(labels, scores, masks=None, maps=None, protocols=PROTOCOLS, integration_limit=0.3, names=None):
    """Compute the requested ``protocols`` (names in :data:`PROTOCOLS`).

    Returns ``{protocol: value or None, ..., "notes": {protocol: why it is None}}``. Pixel protocols are ``None``
    with a note when ``masks`` or ``maps`` is missing.
    """
    unknown = [name for name in protocols if name not in PROTOCOLS]
    if unknown:
        raise UserError(f"unknown metric protocol(s) {unknown}; choose from {list(PROTOCOLS)}")
    undefined = {
        "image_auroc": "not defined: the test labels hold only one class",
        "pixel_auroc": "not defined: the masks hold only defect or only normal pixels",
        "au_pro": "not defined: the masks hold no defect region or no normal pixel",
    }
    results, notes = {}, {}
    for name in protocols:
        if name == "image_auroc":
            results[name] = image_auroc(labels, scores, names=names)
        elif masks is None or maps is None:
            results[name] = None
            notes[name] = "not available: no " + ("ground-truth masks" if masks is None else "anomaly maps")
            continue
        elif name == "pixel_auroc":
            results[name] = pixel_auroc(masks, maps, names=names)
        else:
            results[name] = au_pro(masks, maps, integration_limit, names=names)
        if results[name] is None:
            notes[name] = undefined[name]
    results["notes"] = notes
    return results
