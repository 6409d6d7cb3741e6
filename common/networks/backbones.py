"""Frozen ImageNet backbones (paddle.vision ResNets and VGG16) and torch -> Paddle weight conversion.

paddle.vision's ``resnet18``, ``wide_resnet50_2``, ``wide_resnet101_2`` (Bottleneck v1.5: stride on the 3x3 conv)
and ``vgg16`` use torchvision's parameter names, except that BatchNorm running statistics are called ``_mean``
and ``_variance`` and Linear weights are stored transposed (in, out). A torchvision state dict therefore loads
after :func:`convert_torchvision_state_dict`. See ``docs/weights.md`` for where the weight files come from.

``weights`` arguments everywhere in this module take:

- ``"imagenet"``: the paddle.vision ImageNet file, downloaded to (or found in) ``~/.cache/paddle/hapi/weights``;
- a path to a ``.pdparams`` file holding a paddle.vision state dict (e.g. from ``scripts/convert_torch_weights.py``);
- ``None`` or ``"random"``: Paddle's random initialisation (tests and smoke runs only).
"""
import difflib
import os

import numpy as np
import paddle
import paddle.utils.download
import paddle.vision.models as vision_models
import paddle.vision.models.resnet as vision_resnet
import paddle.vision.models.vgg as vision_vgg

from common.core.download import quiet_paddle_download
from common.core.errors import UserError

ARCHS = ("resnet18", "wide_resnet50_2", "wide_resnet101_2", "vgg16")
RESNET_ARCHS = ("resnet18", "wide_resnet50_2", "wide_resnet101_2")
RESNET_STAGES = ("layer1", "layer2", "layer3", "layer4")
RESNET_STAGE_CHANNELS = {
    "resnet18": (64, 128, 256, 512),
    "wide_resnet50_2": (256, 512, 1024, 2048),
    "wide_resnet101_2": (256, 512, 1024, 2048),
}
RESNET_STAGE_STRIDES = (4, 8, 16, 32)
VGG16_NUM_FEATURES = 31
TORCH_LINEAR_WEIGHTS = {
    "resnet18": ("fc.weight",),
    "wide_resnet50_2": ("fc.weight",),
    "wide_resnet101_2": ("fc.weight",),
    "vgg16": ("classifier.0.weight", "classifier.3.weight", "classifier.6.weight"),
}
CONVERT_SCRIPT = "scripts/convert_torch_weights.py"
_SHOWN_KEYS = 5


def check_arch(arch, allowed=ARCHS, what="backbone"):
    """Return ``arch`` if it is in ``allowed``, else raise ``UserError`` naming the closest valid choice."""
    if arch in allowed:
        return arch
    close = difflib.get_close_matches(str(arch), allowed, n=1, cutoff=0.4)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise UserError(f"unknown {what} '{arch}' (choose from {', '.join(allowed)}){hint}")


def paddle_vision_weights_url(arch):
    """``(url, md5)`` of paddle.vision's ImageNet weight file for ``arch``."""
    check_arch(arch)
    urls = vision_vgg.model_urls if arch == "vgg16" else vision_resnet.model_urls
    return urls[arch]


def paddle_vision_weights_path(arch):
    """Local path of paddle.vision's ImageNet weights for ``arch``, downloading them if they are not cached.

    Uses paddle.vision's own download (cache ``~/.cache/paddle/hapi/weights``, md5 check). Any failure raises a
    one-line ``UserError`` saying which file to place where, or to pass ``--backbone_weights``.
    """
    url, md5 = paddle_vision_weights_url(arch)
    file_name = url.rsplit("/", 1)[-1]
    try:
        with quiet_paddle_download():
            return paddle.utils.download.get_weights_path_from_url(url, md5)
    except Exception as exc:  # paddle raises RuntimeError/AssertionError/OSError depending on the failure
        cache_path = os.path.join(paddle.utils.download.WEIGHTS_HOME, file_name)
        raise UserError(
            f"ImageNet weights for {arch} are not cached and the download from {url} failed "
            f"({type(exc).__name__}): place that file at {cache_path} (md5 {md5}), or pass --backbone_weights "
            f"FILE.pdparams (convert a torchvision .pth with {CONVERT_SCRIPT})"
        ) from None


def load_weights_file(path):
    """Read a ``.pdparams`` state dict as ``{name: numpy.ndarray}``; torch or unreadable files raise ``UserError``."""
    path = os.fspath(path)
    if path.endswith((".pth", ".pt")):
        raise UserError(f"{path} is a PyTorch file: convert it first with "
                        f"python {CONVERT_SCRIPT} --arch ARCH --src {path} --dst FILE.pdparams")
    if not os.path.isfile(path):
        raise UserError(f"weights file not found: {path}")
    try:
        state_dict = paddle.load(path, return_numpy=True)
    except Exception as exc:
        raise UserError(f"cannot read {path} as a Paddle state dict ({type(exc).__name__}: {exc})") from None
    if not isinstance(state_dict, dict):
        raise UserError(f"{path} holds a {type(state_dict).__name__}, not a state dict")
    for name, value in state_dict.items():
        value = np.asarray(value)
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            # ReLU and max-pooling would silently turn NaN weights into zero features: refuse the file instead
            raise UserError(f"{path} holds nan or inf values (in {name}): the weights file is damaged")
    return state_dict


def resolve_weights(arch, weights):
    """The state dict that ``weights`` names for ``arch`` (see module docstring), or None for random init."""
    check_arch(arch)
    if weights is None or weights == "random":
        return None
    if weights == "imagenet":
        return load_weights_file(paddle_vision_weights_path(arch))
    if isinstance(weights, (str, os.PathLike)):
        return load_weights_file(weights)
    raise UserError(f"weights must be 'imagenet', 'random', None or a .pdparams path, got {weights!r}")


def _matches_prefix(key, prefixes):
    """True if ``key`` is one of ``prefixes`` or lies under one of them (whole dotted components)."""
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _describe(keys):
    keys = sorted(keys)
    shown = ", ".join(keys[:_SHOWN_KEYS])
    return f"{len(keys)} ({shown}{', ...' if len(keys) > _SHOWN_KEYS else ''})"


def load_state_dict_strict(layer, state_dict, ignore_prefixes=()):
    """Load ``state_dict`` (name -> array or Tensor) into ``layer``; every key and shape must match.

    Keys equal to or under one of ``ignore_prefixes`` (dotted, e.g. ``"layer4"`` or ``"fc"``) are skipped on both
    sides: neither loaded nor required. Missing, unexpected or mis-shaped keys raise one ``UserError`` listing the
    first few of each. Values are cast to the dtype of the parameter they replace.
    """
    ignore_prefixes = tuple(p.rstrip(".") for p in ignore_prefixes)
    expected = {k: v for k, v in layer.state_dict().items() if not _matches_prefix(k, ignore_prefixes)}
    given = {k: v for k, v in state_dict.items() if not _matches_prefix(k, ignore_prefixes)}
    missing = expected.keys() - given.keys()
    unexpected = given.keys() - expected.keys()
    mismatched = [f"{k} {list(np.shape(given[k]))} vs {list(expected[k].shape)}"
                  for k in sorted(expected.keys() & given.keys())
                  if tuple(np.shape(given[k])) != tuple(expected[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing keys {_describe(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_describe(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches {len(mismatched)} ({'; '.join(mismatched[:_SHOWN_KEYS])})")
    if problems:
        raise UserError(f"state dict does not fit {type(layer).__name__}: " + "; ".join(problems))
    for name, target in expected.items():
        value = given[name]
        if not isinstance(value, paddle.Tensor):
            value = paddle.to_tensor(np.asarray(value))
        if value.dtype != target.dtype:
            value = value.astype(target.dtype)
        target.set_value(value)


def torch_to_paddle_state_dict(state_dict, linear_keys=()):
    """Rename a PyTorch state dict (name -> numpy array) to Paddle conventions.

    BatchNorm ``running_mean``/``running_var`` become ``_mean``/``_variance``, ``num_batches_tracked`` is dropped,
    and the weights named in ``linear_keys`` (nn.Linear, stored (out, in) by torch) are transposed. Conv and
    ConvTranspose weights have the same layout in both frameworks and pass through unchanged.
    """
    absent = [k for k in linear_keys if k not in state_dict]
    if absent:
        raise UserError(f"linear weight(s) {', '.join(absent)} not in the state dict: wrong architecture?")
    converted = {}
    for name, value in state_dict.items():
        if name.endswith("num_batches_tracked"):
            continue
        value = np.asarray(value)
        if name in linear_keys:
            value = value.T
        if name.endswith(".running_mean"):
            name = name[: -len("running_mean")] + "_mean"
        elif name.endswith(".running_var"):
            name = name[: -len("running_var")] + "_variance"
        converted[name] = value
    return converted


def convert_torchvision_state_dict(state_dict, arch):
    """Convert a torchvision ``arch`` state dict (name -> numpy array) into a paddle.vision one."""
    return torch_to_paddle_state_dict(state_dict, TORCH_LINEAR_WEIGHTS[check_arch(arch)])


def _paddle_vision_model(arch, **kwargs):
    return getattr(vision_models, check_arch(arch))(pretrained=False, **kwargs)


def build_backbone(arch, weights="imagenet"):
    """The full paddle.vision ``arch`` model (with classifier) carrying ``weights``, in eval mode.

    A failed download raises ``UserError``; it never falls back to random weights (pass ``weights=None`` for those).
    """
    state_dict = resolve_weights(arch, weights)
    model = _paddle_vision_model(arch)
    if state_dict is not None:
        load_state_dict_strict(model, state_dict)
    model.eval()
    return model


class _FrozenLayer(paddle.nn.Layer):
    """A layer that stays in eval mode with ``stop_gradient`` parameters.

    ``train()`` keeps eval mode; BatchNorm layers use their running statistics even if a parent model's
    ``train()`` flips the ``training`` flags (Paddle sets them on every sublayer directly), so they never update.
    Gradients still flow to the input.
    """

    def _freeze(self):
        for param in self.parameters():
            param.stop_gradient = True
        for sublayer in self.sublayers():
            if isinstance(sublayer, paddle.nn.BatchNorm2D):
                sublayer._use_global_stats = True
        self.eval()

    def train(self, mode=True):
        """Stay in eval mode whatever ``mode`` is (the backbone is frozen)."""
        self.training = False
        for sublayer in self.sublayers():
            sublayer.training = False
        return self


class ResNetFeatures(_FrozenLayer):
    """Frozen ResNet returning the outputs of the requested stages (``layer1`` .. ``layer4``).

    Only the stem and the stages up to the last requested one are kept and run. Submodules keep torchvision's
    names (``conv1``, ``bn1``, ``layer1``, ...), so a full paddle.vision/converted state dict loads (the keys of
    the dropped stages and ``fc`` are ignored). ``channels`` and ``strides`` describe the returned maps, in the
    order of ``layers``.
    """

    def __init__(self, arch, layers=("layer1", "layer2", "layer3"), weights="imagenet"):
        super().__init__()
        check_arch(arch, RESNET_ARCHS, "ResNet backbone")
        layers = tuple(layers)
        for name in layers:
            check_arch(name, RESNET_STAGES, "ResNet stage")
        if not layers or len(set(layers)) != len(layers):
            raise UserError(f"layers must be distinct names among {', '.join(RESNET_STAGES)}, got {layers}")
        state_dict = resolve_weights(arch, weights)
        self.arch = arch
        self.layers = layers
        last = max(RESNET_STAGES.index(name) for name in layers)
        kept_stages = RESNET_STAGES[: last + 1]
        full = _paddle_vision_model(arch, num_classes=0, with_pool=False)
        self.conv1, self.bn1, self.relu, self.maxpool = full.conv1, full.bn1, full.relu, full.maxpool
        for name in kept_stages:
            setattr(self, name, getattr(full, name))
        self._stage_names = kept_stages
        self.channels = [RESNET_STAGE_CHANNELS[arch][RESNET_STAGES.index(n)] for n in layers]
        self.strides = [RESNET_STAGE_STRIDES[RESNET_STAGES.index(n)] for n in layers]
        if state_dict is not None:
            load_state_dict_strict(self, state_dict, ignore_prefixes=("fc",) + RESNET_STAGES[last + 1:])
        self._freeze()

    def forward(self, x):
        """``x``: (N, 3, H, W) normalised images -> list of stage outputs in the order of ``layers``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outputs = {}
        for name in self._stage_names:
            x = getattr(self, name)(x)
            outputs[name] = x
        return [outputs[name] for name in self.layers]


class VGG16Features(_FrozenLayer):
    """Frozen VGG16 ``features`` returning the outputs of the modules at ``taps`` (indices into ``features``).

    Only ``features[0 .. max(taps)]`` is kept; its parameters keep the names ``features.N``.
    """

    def __init__(self, taps, weights="imagenet"):
        super().__init__()
        taps = tuple(int(t) for t in taps)
        if not taps or list(taps) != sorted(set(taps)) or taps[0] < 0 or taps[-1] >= VGG16_NUM_FEATURES:
            raise UserError(f"VGG16 taps must be increasing indices in 0..{VGG16_NUM_FEATURES - 1}, got {taps}")
        state_dict = resolve_weights("vgg16", weights)
        self.taps = taps
        full = _paddle_vision_model("vgg16", num_classes=0, with_pool=False)
        self.features = paddle.nn.Sequential(*list(full.features.children())[: taps[-1] + 1])
        dropped = tuple(f"features.{i}" for i in range(taps[-1] + 1, VGG16_NUM_FEATURES))
        if state_dict is not None:
            load_state_dict_strict(self, state_dict, ignore_prefixes=("classifier",) + dropped)
        self._freeze()

    def forward(self, x):
        """``x``: (N, 3, H, W) -> list of the tapped module outputs, in the order of ``taps``."""
        outputs = []
        tap_set = set(self.taps)
        for index, module in enumerate(self.features.children()):
            x = module(x)
            if index in tap_set:
                outputs.append(x)
        return outputs
