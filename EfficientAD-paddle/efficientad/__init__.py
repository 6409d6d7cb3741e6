"""EfficientAD (Batzner, Heckler, König; WACV 2024) in PaddlePaddle, following nelson1425/EfficientAD.

Modules:

- :mod:`efficientad.model`: PDN-S / PDN-M (teacher C=384 outputs, student 2C), the padded pretraining PDN, the
  autoencoder, PyTorch's default initialisation, and the WRN-101 PatchCore-style teacher-pretraining target.
- :mod:`efficientad.loss`: torch-equal quantile, hard-feature student loss (q=0.999), ImageNet penalty, autoencoder
  and student-autoencoder losses, one training iteration's terms, teacher-pretraining MSE.
- :mod:`efficientad.detector`: :class:`~efficientad.detector.EfficientADDetector` (maps, score, statistics as
  buffers, exportable), teacher channel statistics and validation map quantiles.
"""

# the method contract (common.cli.commands): the entry scripts pass this package and reach its modules
from . import checkpoint, config, data, detector, evaluate, loss, model, trainer  # noqa: E402,F401
