"""RD4AD networks: frozen teacher, one-class bottleneck embedding (OCBE) and the reverse-distillation decoder.

Sub-layer names follow the official PyTorch code (``resnet.py::BN_layer``, ``de_resnet.py::ResNet``), so a
checkpoint ``{'bn': ..., 'decoder': ...}`` saved by it loads after renaming the BatchNorm statistics
(see :mod:`rd4ad.checkpoint`). Differences to the paper that the official code has, and that are kept on purpose:

- the MFF has no 1x1 fusion conv; ``conv4``/``bn4`` exist (so checkpoints load) but are never used;
- the OCE bottleneck width is ``512 * width_per_group / 64`` = 1024 for Wide-ResNet-50-2 (``width_per_group=128``).

Initialisation as the official code: convolutions kaiming-normal with ``fan_out`` (ReLU gain), BatchNorm weight 1
and bias 0, transposed convolutions PyTorch's default ``kaiming_uniform(a=sqrt(5))``, i.e. U(+-1/sqrt(fan_in)) with
torch's fan_in of a (in, out, kH, kW) weight = out * kH * kW. The trained BatchNorms keep torch's running variance
(``common.networks.batchnorm``).
"""
import math
from dataclasses import dataclass

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from common.networks.backbones import ResNetFeatures, check_arch
from common.networks.batchnorm import BatchNorm2D


@dataclass(frozen=True)
class Architecture:
    """OCBE and decoder shape for one teacher (the official ``resnet.py``/``de_resnet.py`` constructors)."""

    block: str              # "basic" (expansion 1) or "bottleneck" (expansion 4)
    oce_blocks: int         # blocks in the OCE stage
    decoder_blocks: tuple   # blocks in decoder layer1, layer2, layer3
    width_per_group: int    # 64 for ResNet, 128 for Wide-ResNet

    @property
    def expansion(self):
        return 1 if self.block == "basic" else 4


ARCHITECTURES = {
    "resnet18": Architecture("basic", 2, (2, 2, 2), 64),
    "wide_resnet50_2": Architecture("bottleneck", 3, (3, 4, 6), 128),
    "wide_resnet101_2": Architecture("bottleneck", 3, (3, 4, 23), 128),
}
BACKBONES = tuple(ARCHITECTURES)


# -- layers with the official initialisation -------------------------------------------------------------------
def conv3x3(in_channels, out_channels, stride=1):
    return nn.Conv2D(in_channels, out_channels, 3, stride=stride, padding=1, bias_attr=False)


def conv1x1(in_channels, out_channels, stride=1):
    return nn.Conv2D(in_channels, out_channels, 1, stride=stride, bias_attr=False)


class Upsample2x2(nn.Conv2DTranspose):
    """The decoder's upsampling: 2x2 transposed convolution with stride 2, no bias (official ``deconv2x2``).

    Computed as the equal 1x1 convolution to 4x the channels followed by ``pixel_shuffle(2)``: the 2x2 windows of
    a stride-2, 2x2 transposed convolution do not overlap, so output (o, 2i+a, 2j+b) is sum_c x(c, i, j) W(c, o, a, b),
    which is channel 4o+2a+b of the 1x1 convolution. Paddle's oneDNN ``conv2d_transpose`` kernel runs for inference
    only ("ConvTransposeOneDNN works only for inference", 3.3.1), so training on oneDNN
    (``common.training.onednn.onednn_convolutions``) needs this form. The parameter is the transposed convolution's own
    (same name, shape and initialisation).
    """

    onednn_convolution = True  # trained on oneDNN like nn.Conv2D (common.training.onednn.is_convolution)

    def __init__(self, in_channels, out_channels):
        super().__init__(in_channels, out_channels, 2, stride=2, bias_attr=False)

    def forward(self, x):
        in_channels, out_channels = self.weight.shape[0], self.weight.shape[1]
        weight = paddle.reshape(paddle.transpose(self.weight, [1, 2, 3, 0]), [out_channels * 4, in_channels, 1, 1])
        return F.pixel_shuffle(F.conv2d(x, weight), 2)


def deconv2x2(in_channels, out_channels):
    return Upsample2x2(in_channels, out_channels)


def init_official(layer):
    """Re-initialise every Conv2D, Conv2DTranspose and BatchNorm2D under ``layer`` as the official code does."""
    for sub in layer.sublayers(include_self=True):
        if isinstance(sub, nn.Conv2DTranspose):
            in_channels, out_per_group, kh, kw = sub.weight.shape
            bound = 1.0 / math.sqrt(out_per_group * kh * kw)
            nn.initializer.Uniform(-bound, bound)(sub.weight)
        elif isinstance(sub, nn.Conv2D):
            out_channels, _, kh, kw = sub.weight.shape
            nn.initializer.KaimingNormal(fan_in=out_channels * kh * kw, nonlinearity="relu")(sub.weight)
        elif isinstance(sub, nn.BatchNorm2D):
            nn.initializer.Constant(1.0)(sub.weight)
            nn.initializer.Constant(0.0)(sub.bias)


# -- residual blocks ------------------------------------------------------------------------------------------
class BasicBlock(nn.Layer):
    """Two 3x3 convs; with ``transposed`` (decoder) the first one is a 2x2 stride-2 transposed conv.

    The shortcut is called ``downsample`` in the encoder-style OCE and ``upsample`` in the decoder (official names).
    """

    expansion = 1

    def __init__(self, in_channels, planes, stride=1, shortcut=None, transposed=False, base_width=64):
        super().__init__()
        if base_width != 64:
            raise ValueError("BasicBlock supports width_per_group=64 only")
        self.conv1 = deconv2x2(in_channels, planes) if transposed else conv3x3(in_channels, planes, stride)
        self.bn1 = BatchNorm2D(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = BatchNorm2D(planes)
        self.relu = nn.ReLU()
        self._shortcut_name = "upsample" if transposed else "downsample"
        setattr(self, self._shortcut_name, shortcut)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = getattr(self, self._shortcut_name)
        identity = x if shortcut is None else shortcut(x)
        return self.relu(out + identity)


class Bottleneck(nn.Layer):
    """1x1 -> 3x3 (stride here, v1.5; or, with ``transposed``, a 2x2 stride-2 transposed conv) -> 1x1, expansion 4.

    The shortcut is called ``downsample`` in the encoder-style OCE and ``upsample`` in the decoder (official names).
    """

    expansion = 4

    def __init__(self, in_channels, planes, stride=1, shortcut=None, transposed=False, base_width=64):
        super().__init__()
        width = int(planes * (base_width / 64.0))
        self.conv1 = conv1x1(in_channels, width)
        self.bn1 = BatchNorm2D(width)
        self.conv2 = deconv2x2(width, width) if transposed else conv3x3(width, width, stride)
        self.bn2 = BatchNorm2D(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = BatchNorm2D(planes * self.expansion)
        self.relu = nn.ReLU()
        self._shortcut_name = "upsample" if transposed else "downsample"
        setattr(self, self._shortcut_name, shortcut)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = getattr(self, self._shortcut_name)
        identity = x if shortcut is None else shortcut(x)
        return self.relu(out + identity)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


# -- OCBE ----------------------------------------------------------------------------------------------------
class OCBE(nn.Layer):
    """One-class bottleneck embedding (official ``BN_layer``): MFF branches + a ResNet layer4-like OCE stage.

    Input: the teacher's [layer1, layer2, layer3] maps (e.g. 256x64^2, 512x32^2, 1024x16^2 for WRN50 at 256 px).
    Output: the one-class embedding (2048x8^2 for WRN50).
    """

    def __init__(self, arch):
        super().__init__()
        block = BLOCKS[arch.block]
        e = block.expansion
        self.conv1 = conv3x3(64 * e, 128 * e, 2)
        self.bn1 = BatchNorm2D(128 * e)
        self.conv2 = conv3x3(128 * e, 256 * e, 2)
        self.bn2 = BatchNorm2D(256 * e)
        self.conv3 = conv3x3(128 * e, 256 * e, 2)
        self.bn3 = BatchNorm2D(256 * e)
        # Defined but unused by the official forward (issue hq-deng/RD4AD#36); kept so checkpoints load.
        self.conv4 = conv1x1(1024 * e, 512 * e)
        self.bn4 = BatchNorm2D(512 * e)
        self.relu = nn.ReLU()
        concat_channels = 3 * 256 * e
        planes = 512
        shortcut = nn.Sequential(conv1x1(concat_channels, planes * e, 2), BatchNorm2D(planes * e))
        blocks = [block(concat_channels, planes, 2, shortcut, base_width=arch.width_per_group)]
        blocks += [block(planes * e, planes, base_width=arch.width_per_group) for _ in range(1, arch.oce_blocks)]
        self.bn_layer = nn.Sequential(*blocks)
        init_official(self)

    def forward(self, features):
        """``features``: the teacher's three maps -> the one-class embedding."""
        branch1 = self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(features[0]))))))
        branch2 = self.relu(self.bn3(self.conv3(features[1])))
        return self.bn_layer(paddle.concat([branch1, branch2, features[2]], axis=1))


# -- decoder -------------------------------------------------------------------------------------------------
class Decoder(nn.Layer):
    """Student decoder (official ``de_resnet.py::ResNet``): three stages that each upsample 2x.

    Returns the maps ordered to pair with the teacher's [layer1, layer2, layer3] (e.g. 256x64^2, 512x32^2,
    1024x16^2 for WRN50).
    """

    def __init__(self, arch):
        super().__init__()
        block = BLOCKS[arch.block]
        e = block.expansion
        self._in_channels = 512 * e
        self.layer1 = self._make_stage(block, 256, arch.decoder_blocks[0], arch.width_per_group)
        self.layer2 = self._make_stage(block, 128, arch.decoder_blocks[1], arch.width_per_group)
        self.layer3 = self._make_stage(block, 64, arch.decoder_blocks[2], arch.width_per_group)
        init_official(self)

    def _make_stage(self, block, planes, num_blocks, base_width):
        out_channels = planes * block.expansion
        shortcut = nn.Sequential(deconv2x2(self._in_channels, out_channels), BatchNorm2D(out_channels))
        blocks = [block(self._in_channels, planes, 2, shortcut, transposed=True, base_width=base_width)]
        self._in_channels = out_channels
        blocks += [block(out_channels, planes, base_width=base_width) for _ in range(1, num_blocks)]
        return nn.Sequential(*blocks)

    def forward(self, embedding):
        a = self.layer1(embedding)
        b = self.layer2(a)
        c = self.layer3(b)
        return [c, b, a]


class ReverseDistillation(nn.Layer):
    """Teacher (frozen ResNet features), ``bn`` (OCBE) and ``decoder`` (student).

    ``forward(x)`` returns ``(teacher_features, student_features)``, two lists of three maps that pair up scale by
    scale. Only ``bn`` and ``decoder`` are trained; the teacher stays in eval mode whatever ``train()`` is called.
    ``backbone_weights``: ``"imagenet"`` loads paddle.vision's own ImageNet file for ``backbone`` (the official code
    used torchvision's: convert it with ``scripts/convert_torch_weights.py`` and pass the ``.pdparams``, see
    docs/weights.md), ``"random"`` (tests) or a ``.pdparams`` path.
    """

    def __init__(self, backbone="wide_resnet50_2", backbone_weights="imagenet"):
        super().__init__()
        check_arch(backbone, BACKBONES, "RD4AD backbone")
        arch = ARCHITECTURES[backbone]
        self.backbone = backbone
        self.teacher = ResNetFeatures(backbone, layers=("layer1", "layer2", "layer3"), weights=backbone_weights)
        self.bn = OCBE(arch)
        self.decoder = Decoder(arch)

    def train(self):
        """OCBE and decoder in train mode; the teacher stays in eval mode (Paddle's ``train`` flips every sublayer)."""
        super().train()
        self.teacher.eval()
        return self

    def forward(self, x):
        teacher_features = self.teacher(x)
        return teacher_features, self.student(teacher_features)

    def student(self, teacher_features):
        """OCBE and decoder: the teacher's three maps -> the student's three maps."""
        return self.decoder(self.bn(teacher_features))

    def trainable_parameters(self):
        """The parameters the official optimiser receives: decoder + OCBE (conv4/bn4 included; they get no grad)."""
        return [p for p in list(self.decoder.parameters()) + list(self.bn.parameters()) if p.trainable]

    def student_state_dict(self):
        """``{'bn': ..., 'decoder': ...}``: what a checkpoint holds (the teacher comes from its weight file)."""
        return {"bn": self.bn.state_dict(), "decoder": self.decoder.state_dict()}

    def load_student_state_dict(self, state):
        """Load ``{'bn': ..., 'decoder': ...}`` strictly (every key and shape must match)."""
        from common.networks.backbones import load_state_dict_strict

        load_state_dict_strict(self.bn, state["bn"])
        load_state_dict_strict(self.decoder, state["decoder"])


def count_parameters(layer):
    """Number of trainable scalars (weights and BatchNorm affine; Paddle's BatchNorm running statistics are
    non-trainable parameters and are not counted)."""
    return int(sum(math.prod(p.shape) for p in layer.parameters() if p.trainable))
