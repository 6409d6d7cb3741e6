"""Backbones: torchvision -> Paddle conversion against torch reference networks, frozen features, error paths.

torchvision cannot be installed next to this torch build, so the reference ResNet (BasicBlock, Bottleneck v1.5)
and VGG16 are written here with torchvision's module and parameter names. They are randomly initialised, with
random BatchNorm affine parameters and running statistics so that the BN renaming is exercised.
"""
import hashlib
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

from common.core.errors import UserError
from common.networks import backbones
from common.networks.backbones import (
    ResNetFeatures,
    VGG16Features,
    build_backbone,
    convert_torchvision_state_dict,
    load_state_dict_strict,
    torch_to_paddle_state_dict,
)

try:
    import torch
    from torch import nn

    from torch_reference import TorchResNet, TorchVGG16, randomise_batchnorm, torch_tapped_features
except ImportError:
    torch = None

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONVERT_SCRIPT = os.path.join(REPO, "scripts", "convert_torch_weights.py")
sys.path.insert(0, os.path.join(REPO, "scripts"))

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")

def random_torch_resnet(arch, seed=0):
    torch.manual_seed(seed)
    return randomise_batchnorm(TorchResNet(arch), seed)


def random_images(seed=0, size=64):
    return np.random.RandomState(seed).randn(2, 3, size, size).astype(np.float32)


def assert_close_to_scale(actual, expected, rtol=1e-4):
    """|actual - expected| <= rtol * max|expected| (a tolerance relative to the feature scale)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    scale = float(np.abs(expected).max())
    assert scale > 0
    assert float(np.abs(actual - expected).max()) <= rtol * scale


def run_convert(arch, src, dst):
    from convert_torch_weights import main as convert_main

    return convert_main(["--arch", arch, "--src", str(src), "--dst", str(dst)])


# --- conversion against torch references ----------------------------------------------------------------------------

@needs_torch
@pytest.mark.parametrize("arch", backbones.ARCHS)
def test_converted_names_and_shapes_match_paddle_vision(arch):
    """Every torchvision parameter maps to a paddle.vision one of the right shape (no weights allocated)."""
    with torch.device("meta"):
        reference = TorchVGG16() if arch == "vgg16" else TorchResNet(arch)
    torch_shapes = {name: np.broadcast_to(np.float32(0), tuple(v.shape)) for name, v in reference.state_dict().items()}
    converted = convert_torchvision_state_dict(torch_shapes, arch)
    with paddle.LazyGuard():
        model = getattr(paddle.vision.models, arch)()
    expected = {name: tuple(v.shape) for name, v in model.state_dict().items()}
    assert {name: v.shape for name, v in converted.items()} == expected
    assert not any("num_batches_tracked" in name or "running_" in name for name in converted)


@needs_torch
def test_resnet18_cli_conversion_matches_torch(tmp_path):
    """The command line converts a .pth; features and logits then equal the torch reference's."""
    reference = random_torch_resnet("resnet18", seed=1)
    src, dst = tmp_path / "resnet18.pth", tmp_path / "resnet18.pdparams"
    torch.save({"state_dict": reference.state_dict()}, src)
    result = subprocess.run([sys.executable, CONVERT_SCRIPT, "--arch", "resnet18", "--src", str(src),
                             "--dst", str(dst)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert dst.is_file() and not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]

    images = random_images(seed=1)
    with torch.no_grad():
        torch_stages, torch_logits = reference(torch.from_numpy(images))
    extractor = ResNetFeatures("resnet18", layers=("layer1", "layer2", "layer3", "layer4"), weights=str(dst))
    for ours, theirs in zip(extractor(paddle.to_tensor(images)), torch_stages):
        assert_close_to_scale(ours.numpy(), theirs.numpy())
    model = build_backbone("resnet18", weights=dst)
    assert_close_to_scale(model(paddle.to_tensor(images)).numpy(), torch_logits.numpy())


@needs_torch
def test_wide_resnet50_2_conversion_matches_torch(tmp_path):
    reference = random_torch_resnet("wide_resnet50_2", seed=2)
    src, dst = tmp_path / "wrn50.pth", tmp_path / "wrn50.pdparams"
    torch.save(reference.state_dict(), src)
    assert run_convert("wide_resnet50_2", src, dst) == str(dst)

    images = random_images(seed=2)
    with torch.no_grad():
        torch_stages, torch_logits = reference(torch.from_numpy(images))
    extractor = ResNetFeatures("wide_resnet50_2", layers=("layer3", "layer1"), weights=dst)
    ours = extractor(paddle.to_tensor(images))
    assert [o.shape[1] for o in ours] == extractor.channels == [1024, 256]
    assert_close_to_scale(ours[0].numpy(), torch_stages[2].numpy())
    assert_close_to_scale(ours[1].numpy(), torch_stages[0].numpy())
    model = build_backbone("wide_resnet50_2", weights=dst)
    assert_close_to_scale(model(paddle.to_tensor(images)).numpy(), torch_logits.numpy())


@needs_torch
def test_vgg16_features_match_torch(tmp_path):
    """VGG16 features (biases, tap indices); the classifier is dropped to keep the test small."""
    torch.manual_seed(3)
    reference = TorchVGG16().features.eval()
    dst = tmp_path / "vgg16_features.pdparams"
    features_state = {f"features.{k}": v.numpy() for k, v in reference.state_dict().items()}
    paddle.save(torch_to_paddle_state_dict(features_state), str(dst))

    images = random_images(seed=3, size=32)
    taps = (1, 4, 6, 9, 11, 13, 16, 18, 20, 23, 25, 27, 30)  # every ReLU/pool output MKD's official code collects
    with torch.no_grad():
        expected = torch_tapped_features(reference, torch.from_numpy(images), taps)
    extractor = VGG16Features(taps, weights=dst)
    ours = extractor(paddle.to_tensor(images))
    assert len(ours) == 13
    for mine, theirs in zip(ours, expected):
        assert_close_to_scale(mine.numpy(), theirs.numpy())


@needs_torch
def test_linear_weights_are_transposed():
    torch.manual_seed(4)
    linear = nn.Linear(5, 3)
    converted = torch_to_paddle_state_dict({k: v.detach().numpy() for k, v in linear.state_dict().items()},
                                           linear_keys=("weight",))
    ours = paddle.nn.Linear(5, 3)
    load_state_dict_strict(ours, converted)
    x = np.random.RandomState(4).randn(4, 5).astype(np.float32)
    np.testing.assert_allclose(ours(paddle.to_tensor(x)).numpy(), linear(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-5, atol=1e-6)


# --- feature extractors ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch,layers,channels,strides", [
    ("resnet18", ("layer1", "layer2", "layer3"), [64, 128, 256], [4, 8, 16]),
    ("wide_resnet50_2", ("layer1", "layer2", "layer3"), [256, 512, 1024], [4, 8, 16]),
    ("wide_resnet101_2", ("layer2", "layer3"), [512, 1024], [8, 16]),  # EfficientAD teacher pretraining
])
def test_resnet_features_shapes(arch, layers, channels, strides):
    extractor = ResNetFeatures(arch, layers=layers, weights=None)
    assert extractor.channels == channels and extractor.strides == strides
    assert not hasattr(extractor, "layer4") and not hasattr(extractor, "fc")
    outputs = extractor(paddle.to_tensor(random_images(size=64)))
    assert [tuple(o.shape) for o in outputs] == [(2, c, 64 // s, 64 // s) for c, s in zip(channels, strides)]


@pytest.mark.filterwarnings("ignore:When training, we now always track global mean and variance")
def test_resnet_features_are_frozen():
    extractor = ResNetFeatures("resnet18", layers=("layer1", "layer2"), weights=None)
    batchnorms = [m for m in extractor.sublayers() if isinstance(m, paddle.nn.BatchNorm2D)]
    stats_before = [m._mean.numpy().copy() for m in batchnorms]
    images = paddle.to_tensor(random_images(seed=5))
    eval_outputs = [o.numpy() for o in extractor(images)]

    assert all(p.stop_gradient for p in extractor.parameters())
    extractor.train()
    assert not extractor.training and not any(m.training for m in extractor.sublayers())

    parent = paddle.nn.Sequential(extractor)
    parent.train()  # Paddle flips every sublayer's flag directly, bypassing extractor.train()
    images.stop_gradient = False
    outputs = extractor(images)
    for ours, reference in zip(outputs, eval_outputs):
        np.testing.assert_allclose(ours.numpy(), reference, rtol=1e-6, atol=1e-6)
    for before, module in zip(stats_before, batchnorms):
        np.testing.assert_array_equal(module._mean.numpy(), before)
    outputs[-1].sum().backward()
    assert images.grad is not None and float(images.grad.abs().sum()) > 0
    assert all(p.grad is None for p in extractor.parameters())


def test_vgg16_features_truncate_to_last_tap():
    extractor = VGG16Features(taps=(4, 9), weights=None)
    assert len(list(extractor.features.children())) == 10
    outputs = extractor(paddle.to_tensor(random_images(size=32)))
    assert [tuple(o.shape) for o in outputs] == [(2, 64, 16, 16), (2, 128, 8, 8)]
    assert all(p.stop_gradient for p in extractor.parameters())


# --- user errors ----------------------------------------------------------------------------------------------------

def test_unknown_arch_suggests_nearest():
    with pytest.raises(UserError, match="did you mean 'wide_resnet50_2'"):
        build_backbone("wide_resnet50", weights=None)
    with pytest.raises(UserError, match="did you mean 'layer3'"):
        ResNetFeatures("resnet18", layers=("layer1", "layr3"), weights=None)
    with pytest.raises(UserError, match="ResNet backbone"):
        ResNetFeatures("vgg16", weights=None)


def test_torch_file_is_refused_with_conversion_hint(tmp_path):
    path = tmp_path / "resnet18-f37072fd.pth"
    path.write_bytes(b"not read")
    with pytest.raises(UserError, match="convert_torch_weights.py") as info:
        build_backbone("resnet18", weights=str(path))
    assert "\n" not in str(info.value)


def test_missing_file_and_mismatched_state_dict(tmp_path):
    with pytest.raises(UserError, match="not found"):
        ResNetFeatures("resnet18", weights=tmp_path / "absent.pdparams")
    path = tmp_path / "resnet18.pdparams"
    paddle.save(build_backbone("resnet18", weights=None).state_dict(), str(path))
    with pytest.raises(UserError) as info:
        build_backbone("wide_resnet50_2", weights=path)
    message = str(info.value)
    assert "missing keys" in message and "shape mismatches" in message and "layer1.0.conv3.weight" in message
    assert "\n" not in message

    state = paddle.load(str(path), return_numpy=True)
    state["extra.weight"] = np.zeros(3, np.float32)
    del state["layer1.0.bn1._variance"]
    with pytest.raises(UserError, match=r"missing keys 1 \(layer1.0.bn1._variance\); unexpected keys 1 "
                                        r"\(extra.weight\)"):
        load_state_dict_strict(build_backbone("resnet18", weights=None), state)
    # keys of stages the extractor drops are ignored, so the full file loads into a truncated extractor
    ResNetFeatures("resnet18", layers=("layer1",), weights=path)


def test_download_failure_is_one_line_and_never_random(tmp_path, monkeypatch):
    """paddle's own download path fails (no retry allowed here, so no network is touched): a UserError results."""
    monkeypatch.setattr(paddle.utils.download, "WEIGHTS_HOME", str(tmp_path))
    monkeypatch.setattr(paddle.utils.download, "DOWNLOAD_RETRY_LIMIT", 0)
    with pytest.raises(UserError) as info:
        ResNetFeatures("wide_resnet50_2")
    message = str(info.value)
    assert "\n" not in message
    assert os.path.join(str(tmp_path), "wide_resnet50_2.pdparams") in message
    assert "--backbone_weights" in message and "convert_torch_weights.py" in message
    with pytest.raises(UserError, match="vgg16.pdparams"):
        VGG16Features(taps=(4,))


def test_imagenet_weights_are_read_from_the_paddle_cache(tmp_path, monkeypatch):
    """A file placed where the error message says is used (md5 checked by paddle), without any download."""
    source = build_backbone("resnet18", weights=None)
    paddle.save(source.state_dict(), str(tmp_path / "resnet18.pdparams"))
    md5 = hashlib.md5((tmp_path / "resnet18.pdparams").read_bytes()).hexdigest()
    url, _ = backbones.paddle_vision_weights_url("resnet18")
    monkeypatch.setitem(paddle.vision.models.resnet.model_urls, "resnet18", (url, md5))
    monkeypatch.setattr(paddle.utils.download, "WEIGHTS_HOME", str(tmp_path))
    monkeypatch.setattr(paddle.utils.download, "DOWNLOAD_RETRY_LIMIT", 0)
    extractor = ResNetFeatures("resnet18", layers=("layer1",), weights="imagenet")
    np.testing.assert_array_equal(extractor.layer1[1].bn2._variance.numpy(), source.layer1[1].bn2._variance.numpy())


@needs_torch
def test_convert_script_errors(tmp_path, capsys):
    src = tmp_path / "wrong.pth"
    torch.save(random_torch_resnet("resnet18").state_dict(), src)
    with pytest.raises(SystemExit) as info:
        run_convert("wide_resnet50_2", src, tmp_path / "out.pdparams")
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "not a torchvision wide_resnet50_2" in err[0]
    assert not os.path.exists(tmp_path / "out.pdparams")

    torch.save({"epoch": 3, "net": torch.nn.Linear(2, 2)}, tmp_path / "pickled.pth")
    with pytest.raises(SystemExit):
        run_convert("resnet18", tmp_path / "pickled.pth", tmp_path / "out.pdparams")
    assert capsys.readouterr().err.startswith("error: cannot load")
