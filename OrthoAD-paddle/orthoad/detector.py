"""OrthoAD / PaDiM's detector: the exported layer, normalised images -> (anomaly map (N,1,S,S), score (N,)).

Embedding, projection and Mahalanobis distance on the feature grid (:mod:`orthoad.model`), then the official
post-processing: bilinear upsampling with ``align_corners=False`` (:class:`common.networks.postprocess.MatrixResize`,
constant interpolation matrices equal to PyTorch's ``F.interpolate``, because Paddle Inference 3.3 on CPU cannot
run an exported ``bilinear_interp`` op), a Gaussian blur of sigma 4 (SciPy's 'reflect' border) and the maximum.
"""
import paddle

from common.networks.postprocess import GaussianBlur, MatrixResize


class OrthoADDetector(paddle.nn.Layer):
    """Image (N, 3, S, S) -> (anomaly map (N, 1, S, S), image score (N,)); the whole pipeline in one graph."""

    original_resolution = False  # maps are compared at the network's input size

    def __init__(self, embedder, scorer, image_size, sigma=4.0):
        super().__init__()
        self.embedder = embedder
        self.scorer = scorer
        self.image_size = int(image_size)
        self.upsample = MatrixResize(scorer.grid[0], self.image_size, "bilinear", align_corners=False)
        self.blur = GaussianBlur(self.image_size, sigma)

    def distance(self, x):
        """The (N, 1, H, W) Mahalanobis map on the feature grid."""
        return self.scorer(self.embedder(x))

    def forward(self, x):
        return self.postprocess(self.distance(x))

    def postprocess(self, distance):
        """Feature-grid distances (N, 1, H, W) -> (anomaly map (N, 1, S, S), image score (N,))."""
        amap = self.blur(self.upsample(distance))
        score = paddle.max(paddle.reshape(amap, [-1, self.image_size * self.image_size]), axis=1)
        return amap, score
