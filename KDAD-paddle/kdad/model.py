"""MKD networks: the frozen VGG16 expert (source) and the small VGG-like cloner, as in the official code.

Reproduces ``models/network.py`` of Niousha12/Knowledge_Distillation_AD (MVTec setting, 3x128x128 inputs in
[0, 1], no ImageNet normalisation):

- ``Vgg16`` (expert): torchvision ``vgg16().features``; the loss uses its outputs after ``features[9]``,
  ``[16]``, ``[23]`` and ``[30]`` (pool2 .. pool5, official tap indices 3, 6, 9, 12 of its 13 taps).
- ``make_arch('B', cfg, use_bias=False, batch_norm=True)`` (cloner): 3x3 convolutions without bias,
  ``xavier_uniform_`` weights; a convolution directly before a max-pool is conv -> ReLU, every other one
  conv -> BN -> ReLU. Its outputs after ``features[11]``, ``[20]``, ``[29]``, ``[38]`` (pool2 .. pool5) have
  the expert's shapes (128x32x32, 256x16x16, 512x8x8, 512x4x4 at 128 px). 343,984 trainable parameters.

The official ``VGG.forward`` also registers a Grad-CAM gradient hook on one tap; it does not change any number
and is left out. Parameter names are those of the official modules (``features.N.weight``, BN statistics as
``_mean``/``_variance``), so a converted official checkpoint loads with
``common.networks.backbones.torch_to_paddle_state_dict``.
"""
import paddle
import paddle.nn.functional as F
from paddle import nn

from common.networks.backbones import VGG16Features
from common.networks.batchnorm import BatchNorm2D

# Official get_networks(): 'A' = full VGG16 widths (equal_network_size: True), 'B' = the smaller cloner used
# for the MVTec numbers.
CLONER_CONFIGS = {
    "A": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "B": (16, 16, "M", 16, 128, "M", 16, 16, 256, "M", 16, 16, 512, "M", 16, 16, 512, "M"),
}
# Module indices whose outputs the official forwards collect (13 taps each) ...
EXPERT_ALL_TAPS = (1, 4, 6, 9, 11, 13, 16, 18, 20, 23, 25, 27, 30)
CLONER_ALL_TAPS = (2, 5, 8, 11, 14, 17, 20, 23, 26, 29, 32, 35, 38)
# ... and the "critical layers" the loss and scores use: taps [3, 6, 9, 12] = pool2, pool3, pool4, pool5.
EXPERT_CRITICAL_TAPS = (9, 16, 23, 30)
CLONER_CRITICAL_TAPS = (11, 20, 29, 38)
CRITICAL_TAP_NAMES = ("pool2", "pool3", "pool4", "pool5")
CLONER_B_PARAMETERS = 343984


class Expert(VGG16Features):
    """The frozen source network: VGG16 ``features`` returning pool2 .. pool5 (or any other ``taps``).

    ``weights``: ``"imagenet"`` (paddle.vision's own ImageNet VGG16 file, not torchvision's: the official code's
    torchvision weights are a ``.pdparams`` converted by ``scripts/convert_torch_weights.py``, see docs/weights.md),
    a ``.pdparams`` path, or ``None`` for random weights (tests). Always in eval mode with ``stop_gradient`` parameters; gradients still
    reach the input, which the saliency methods need.
    """

    def __init__(self, weights="imagenet", taps=EXPERT_CRITICAL_TAPS):
        super().__init__(taps=taps, weights=weights)


def make_cloner_layers(config):
    """The official ``make_layers(cfg, use_bias=False, batch_norm=True)`` as a list of Paddle layers.

    Every convolution gets torch's ``xavier_uniform_`` (Paddle's ``XavierUniform`` computes the same fans for
    a conv weight: in/out channels times kernel area) and no bias. BatchNorm defaults (weight 1, bias 0,
    momentum 0.9 = torch 0.1, epsilon 1e-5) equal torch's; :class:`BatchNorm2D` also matches its running
    variance update.
    """
    layers, in_channels = [], 3
    for index, item in enumerate(config):
        if item == "M":
            layers.append(nn.MaxPool2D(kernel_size=2, stride=2))
            continue
        conv = nn.Conv2D(in_channels, item, kernel_size=3, padding=1, bias_attr=False,
                         weight_attr=paddle.ParamAttr(initializer=nn.initializer.XavierUniform()))
        before_pool = index + 1 < len(config) and config[index + 1] == "M"
        layers += [conv, nn.ReLU()] if before_pool else [conv, BatchNorm2D(item), nn.ReLU()]
        in_channels = item
    return layers


class Cloner(nn.Layer):
    """The trainable cloner (official ``make_arch(config, ...)``, default 'B') returning the outputs at ``taps``."""

    def __init__(self, config="B", taps=CLONER_CRITICAL_TAPS):
        super().__init__()
        if config not in CLONER_CONFIGS:
            raise ValueError(f"unknown cloner config '{config}', choose from {sorted(CLONER_CONFIGS)}")
        self.config = config
        self.features = nn.Sequential(*make_cloner_layers(CLONER_CONFIGS[config]))
        self.taps = tuple(int(t) for t in taps)
        if list(self.taps) != sorted(set(self.taps)) or self.taps[-1] >= len(self.features):
            raise ValueError(f"taps must be increasing module indices below {len(self.features)}, got {taps}")

    def forward(self, x):
        outputs = run_chain(self.features, x, self.taps[-1] + 1)
        return [outputs[index] for index in self.taps]


def run_chain(features, x, count=None):
    """The outputs of the first ``count`` (default: all) modules of the Sequential ``features`` on ``x``, in order."""
    outputs = []
    # a list, not the children() generator, so that paddle.jit.to_static unrolls the loop
    for module in list(features.children())[:count]:
        x = module(x)
        outputs.append(x)
    return outputs


# The input gradient is written out with forward operators (a convolution with the flipped kernel for a
# convolution's backward, masks for ReLU and max-pool, a scale for BatchNorm) instead of autograd. An exported graph then holds no
# gradient operator: Paddle Inference runs it with oneDNN (its conv2d_grad/pool2d_grad kernels refuse oneDNN in
# 3.3.1: "is_test attribute should be set to False in training phase"), and paddle2onnx converts it (it has no
# gradient operators). The tests check it against paddle.grad and against torch autograd of the official code.
def chain_input_gradient(features, x, outputs, tap_gradients, guided=False):
    """Gradient w.r.t. ``x`` of a loss whose partial gradients at some module outputs are ``tap_gradients``.

    ``outputs``: :func:`run_chain` of ``features`` on ``x``; ``tap_gradients``: ``{module index: gradient}``, the
    loss's *partial* derivative at that module's output (not its total derivative, which would include the paths
    through later taps). ``guided=True`` is guided backprop (the official ``GuidedBackprop``): every ReLU passes
    back ``1[y > 0] * max(grad_out, 0)``. BatchNorm must be in eval mode (a fixed affine map).
    """
    modules = list(features.children())
    gradient = None
    for index in range(len(outputs) - 1, -1, -1):
        if index in tap_gradients:
            gradient = tap_gradients[index] if gradient is None else gradient + tap_gradients[index]
        if gradient is None:
            continue
        module, output = modules[index], outputs[index]
        module_input = x if index == 0 else outputs[index - 1]
        gradient = module_input_gradient(module, gradient, module_input, output, guided)
    return gradient


def module_input_gradient(module, gradient, module_input, output, guided=False):
    """Gradient at ``module``'s input from the ``gradient`` at its ``output``, for the modules of VGG chains."""
    if isinstance(module, nn.ReLU):
        # torch and Paddle give a ReLU's input gradient 0 at 0; guided backprop also drops negative gradients
        passed = F.relu(gradient) if guided else gradient
        return passed * (output > 0).astype(gradient.dtype)
    if isinstance(module, nn.Conv2D):
        if list(module._stride) != [1, 1] or list(module._dilation) != [1, 1] or module._groups != 1 \
                or module._padding_mode != "zeros" or module._data_format != "NCHW" \
                or not isinstance(module._padding, int) or module.weight.shape[2] != module.weight.shape[3]:
            raise ValueError("chain_input_gradient handles stride-1, undilated, ungrouped, square, evenly zero-padded NCHW convolutions only")
        # the transposed convolution written as the equal convolution with the kernel flipped and its in/out
        # channels swapped: oneDNN's conv2d kernel is several times faster than its conv2d_transpose here
        kernel = module.weight.shape[2]
        flipped = paddle.transpose(paddle.flip(module.weight, axis=[2, 3]), [1, 0, 2, 3])
        return F.conv2d(gradient, flipped, padding=kernel - 1 - module._padding)
    if isinstance(module, nn.BatchNorm2D):
        if module.training:
            raise ValueError("chain_input_gradient needs BatchNorm in eval mode")
        scale = module.weight / paddle.sqrt(module._variance + module._epsilon)
        return gradient * scale.astype(gradient.dtype).reshape([1, -1, 1, 1])
    if isinstance(module, nn.MaxPool2D):
        if (module.ksize, module.stride, module.padding, module.ceil_mode) not in ((2, 2, 0, False), ([2, 2], [2, 2], 0, False)):
            raise ValueError("chain_input_gradient handles 2x2, stride-2, unpadded max-pools only")
        return max_pool_input_gradient(gradient, module_input, output)
    raise TypeError(f"no input gradient for {type(module).__name__}")


def max_pool_input_gradient(gradient, pool_input, pool_output):
    """Input gradient of a 2x2, stride-2 max-pool: each window's gradient goes to its maximum.

    On ties the first maximum in row-major order takes it, as Paddle's and torch's CPU kernels do. The four
    window positions are gathered by strided slices and scattered back by ``pixel_shuffle``.
    """
    channels, height, width = pool_output.shape[1], pool_output.shape[2], pool_output.shape[3]
    parts, taken = [], None
    for row, column in ((0, 0), (0, 1), (1, 0), (1, 1)):
        window = pool_input[:, :, row:2 * height:2, column:2 * width:2]
        hit = (window == pool_output).astype(gradient.dtype)
        if taken is None:
            taken = hit
        else:
            hit = hit * (1.0 - taken)
            taken = taken + hit
        parts.append(gradient * hit)
    # (N, C, 4, h, w) -> (N, 4C, h, w): channel 4c + 2*row + column, which pixel_shuffle puts at (2i+row, 2j+column)
    stacked = paddle.reshape(paddle.stack(parts, axis=2), [0, 4 * channels, height, width])
    scattered = F.pixel_shuffle(stacked, 2)
    pad_rows, pad_columns = pool_input.shape[2] - 2 * height, pool_input.shape[3] - 2 * width
    if pad_rows or pad_columns:  # an odd size: the last row/column was not pooled
        scattered = F.pad(scattered, [0, pad_columns, 0, pad_rows])
    return scattered


class KDADNetwork(nn.Layer):
    """Expert and cloner together; ``forward(x)`` -> ``(expert_taps, cloner_taps)``, lists of 4 tensors each.

    The taps are pool2 .. pool5 of both networks (see module docstring). Train only ``self.cloner``'s
    parameters (the official optimiser gets ``model.parameters()`` of the cloner); the expert stays in eval
    mode even when this layer is put in train mode.
    """

    def __init__(self, expert_weights="imagenet", cloner_config="B"):
        super().__init__()
        self.expert = Expert(weights=expert_weights)
        self.cloner = Cloner(config=cloner_config)

    def forward(self, x):
        return self.expert(x), self.cloner(x)


def trainable_parameters(layer):
    """The parameters of ``layer`` that training updates (for the optimiser: ``trainable_parameters(network)``).

    Paddle lists BatchNorm running statistics (``_mean``/``_variance``) and frozen weights among
    ``parameters()`` with ``stop_gradient=True``; they are left out.
    """
    return [p for p in layer.parameters() if not p.stop_gradient]


def count_parameters(layer, trainable_only=True):
    """Number of scalars in :func:`trainable_parameters` (``trainable_only``) or in all of ``parameters()``.

    ``count_parameters(KDADNetwork(...))`` is the cloner's 343,984 (config 'B'). With ``trainable_only=False`` the
    count includes Paddle's BatchNorm running statistics, which are parameters in Paddle but buffers in torch.
    """
    params = trainable_parameters(layer) if trainable_only else layer.parameters()
    return int(sum(int(p.size) for p in params))
