"""RD4AD (Deng & Li, CVPR 2022) in PaddlePaddle, in the shape every method folder of this repository shares:

``config`` (options and official defaults), ``data`` (transform, splits, datasets), ``model`` (networks),
``loss`` (the distillation loss), ``detector`` (the exported layer: images -> map and score), ``trainer``,
``evaluate`` (one class -> results JSON) and ``checkpoint`` (save/load, official checkpoint conversion).
"""

# the method contract (common.cli.commands): the entry scripts pass this package and reach its modules
from . import checkpoint, config, data, detector, evaluate, loss, metric, model, trainer  # noqa: E402,F401
