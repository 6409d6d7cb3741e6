"""The map post-processing (upsample, smooth, image score) as a Paddle layer, used in dygraph and exported.

Upsampling is bilinear with ``align_corners=False`` through :class:`common.postprocess.MatrixResize` (constant
interpolation matrices, equal to PyTorch's ``F.interpolate``), because Paddle Inference 3.3 on CPU cannot run an
exported ``bilinear_interp`` op.
"""
import paddle

from common.postprocess import GaussianBlur, MatrixResize


class AnomalyMap(paddle.nn.Layer):
    """Distance map (N, 1, h, w) -> (smoothed map (N, 1, S, S), image score = max of the map (N,))."""

    def __init__(self, grid, image_size, sigma=4.0):
        super().__init__()
        self.image_size = int(image_size)
        self.upsample = MatrixResize(grid, self.image_size, "bilinear", align_corners=False)
        self.blur = GaussianBlur(self.image_size, sigma)

    def forward(self, distance):
        amap = self.blur(self.upsample(distance))
        score = paddle.max(paddle.reshape(amap, [-1, self.image_size * self.image_size]), axis=1)
        return amap, score
