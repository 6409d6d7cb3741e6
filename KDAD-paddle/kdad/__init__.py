"""MKD / KDAD (Salehi et al., "Multiresolution Knowledge Distillation for Anomaly Detection", CVPR 2021) in Paddle.

Reproduces Niousha12/Knowledge_Distillation_AD (MVTec setting: 128 px inputs in [0, 1], lamda 0.5).

Modules:

- ``kdad.model``     ``Expert`` (frozen VGG16, pool2..pool5), ``Cloner`` (config 'B', 343,984 parameters, with the
  guided-backprop backward), ``KDADNetwork`` (both; ``forward(x) -> (expert_taps, cloner_taps)``),
  ``trainable_parameters``, ``count_parameters``
- ``kdad.loss``      ``MseDirectionLoss`` (training loss, code or paper form), ``detection_scores`` (per image)
- ``kdad.detector``  ``KDADDetector``: images -> (saliency anomaly map, score); vanilla gradients, SmoothGrad,
  guided backprop; exportable with ``paddle.jit`` (Paddle Inference with oneDNN, ONNX)
- ``kdad.metric``    the official detection AUROC and localisation AUROC (1000 thresholds, opening, soft masks)
"""

# the method contract (common.cli.commands): the entry scripts pass this package and reach its modules
from . import checkpoint, config, data, detector, evaluate, loss, metric, model, trainer  # noqa: E402,F401
