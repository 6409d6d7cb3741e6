"""OrthoAD (semi-orthogonal embedding, Kim et al. 2021) and PaDiM in PaddlePaddle, in the shape every method folder
of this repository shares:

``config`` (options and official defaults), ``data`` (pipelines, fit split, datasets), ``model`` (W and the
networks), ``loss`` (the Gaussian fit), ``detector`` (the exported layer: images -> map and score), ``trainer``
(fit one class), ``evaluate`` (one class -> results JSON), ``checkpoint`` (save/load) and ``metric`` (the official
OrthoAD evaluation protocol).
"""

# the method contract (common.cli.commands): the entry scripts pass this package and reach its modules
from . import checkpoint, config, data, detector, evaluate, loss, metric, model, trainer  # noqa: E402,F401
