"""OrthoAD / PaDiM's detector: the exported layer, normalised images -> (anomaly map (N,1,H,W), score (N,)).

Embedding, projection and Mahalanobis distance on the feature grid (:mod:`orthoad.model`), then the official
post-processing: bilinear upsampling with ``align_corners=False`` (:class:`common.networks.postprocess.MatrixResize`,
constant interpolation matrices equal to PyTorch's ``F.interpolate``, because Paddle Inference 3.3 on CPU cannot
run an exported ``bilinear_interp`` op), a Gaussian blur of sigma 4 (SciPy's 'reflect' border) and the maximum.
"""
import numpy as np
import paddle

from common.networks.postprocess import GaussianBlur, MatrixResize


class OrthoADDetector(paddle.nn.Layer):
    """Image (N, 3, H, W) -> (anomaly map (N, 1, H, W), image score (N,)); the whole pipeline in one graph.

    ``image_size`` is a side or (height, width): KolektorSDD runs at 704 x 256 as the official code does."""

    original_resolution = False  # maps are compared at the network's input size

    def __init__(self, embedder, scorer, image_size, sigma=4.0):
        super().__init__()
        self.embedder = embedder
        self.scorer = scorer
        height, width = (image_size, image_size) if np.isscalar(image_size) else image_size
        self.input_shape = (int(height), int(width))
        self.upsample = MatrixResize(scorer.grid, self.input_shape, "bilinear", align_corners=False)
        self.blur = GaussianBlur(self.input_shape, sigma)

    def distance(self, x):
        """The (N, 1, H, W) Mahalanobis map on the feature grid."""
        return self.scorer(self.embedder(x))

    def forward(self, x):
        return self.postprocess(self.distance(x))

    def postprocess(self, distance):
        """Feature-grid distances (N, 1, h, w) -> (anomaly map (N, 1, H, W), image score (N,))."""
        amap = self.blur(self.upsample(distance))
        score = paddle.max(paddle.reshape(amap, [-1, self.input_shape[0] * self.input_shape[1]]), axis=1)
        return amap, score
