"""Shared code for the four anomaly-detection reproductions in this repository.

Sub-modules (import the one you need; nothing heavy is imported here):

- ``common.data.readers.mvtec``  MVTec AD class names and the ``all``/``textures``/``objects`` groups
- ``common.core.errors``      ``UserError`` and the one-line error handler for command-line entry points
- ``common.core.runtime``     CPU thread count, device selection and seeding for Paddle
- ``common.data.readers.mvtec``       MVTec AD / custom-folder reader (images, labels, masks)
- ``common.data.transforms``  per-method image and mask preprocessing
- ``common.data.splits``      seeded train/validation splits
- ``common.synthetic``   seeded MVTec-layout synthetic data
- ``common.metrics``     image/pixel AUROC, AU-PRO (official MVTec), RD4AD PRO, thresholds
- ``common.networks.postprocess`` Gaussian smoothing and upsampling, also as Paddle layers for exported graphs
- ``common.evaluation.pictures``   heatmap overlays, predicted masks, ground-truth contours
- ``common.deploy.predict``     the predict/infer loop over an image or folder: pictures and predictions.jsonl
- ``common.evaluation.results``     atomic file writes and the per-(method, class) results JSON
- ``common.networks.backbones``   ImageNet backbones (resnet18, wide_resnet50_2, wide_resnet101_2, vgg16) and their weights
- ``common.core.inference``   the Paddle Inference predictor behind every ``infer.py``, and the benchmark timer
"""
import os
import warnings

# Import this package before paddle (every entry point does) to keep Paddle's start-up noise out of the output:
# the ccache warning is irrelevant to users, and glog INFO/WARNING lines of the static-graph executor are hidden
# unless the user sets GLOG_minloglevel (0 shows everything).
warnings.filterwarnings("ignore", message=".*ccache.*")
os.environ.setdefault("GLOG_minloglevel", "2")

__version__ = "0.1.0"
