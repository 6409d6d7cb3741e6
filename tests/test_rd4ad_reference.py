"""RD4AD-paddle against an independent PyTorch reference of the official architecture (skipped without torch).

The reference below is written from the official code's description (hq-deng/RD4AD ``resnet.py``, ``de_resnet.py``,
``main.py``, ``test.py``): torchvision-style ResNet teacher, ``BN_layer`` (OCBE with the unused conv4/bn4) and the
mirrored decoder, with the official module names and initialisation. ``benchmark.py`` imports it to time PyTorch
eager on the same model.

Checks: a checkpoint saved in the official format plus a torchvision-style teacher file, converted by
``scripts/convert_rd4ad_checkpoint.py`` and loaded by RD4AD-paddle, gives the same teacher, OCBE and decoder outputs
(eval mode, 1e-4) and the same training loss, gradients and Adam trajectory (train mode); the scoring (cosine maps,
align_corners upsampling, sum, SciPy Gaussian) matches the official computation.
"""
import os
import sys

import numpy as np
import pytest

from optional_torch import F, nn, requires_torch, torch  # noqa: E402

pytestmark = requires_torch  # every test here runs the torch re-statement
from torch_reference import TorchResNet  # noqa: E402 - needs torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RD4AD_DIR = os.path.join(REPO_ROOT, "RD4AD-paddle")
for _path in (REPO_ROOT, RD4AD_DIR, os.path.join(REPO_ROOT, "scripts")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

# (block kind, teacher blocks per stage, OCE blocks, decoder blocks, width_per_group) as the official constructors
TORCH_ARCHS = {
    "resnet18": ("basic", (2, 2, 2, 2), 2, (2, 2, 2), 64),
    "wide_resnet50_2": ("bottleneck", (3, 4, 6, 3), 3, (3, 4, 6), 128),
}


# ----------------------------------------------------------------------------------------------------------------
# PyTorch reference
# ----------------------------------------------------------------------------------------------------------------
def _conv(cin, cout, kernel, stride=1):
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)


def _deconv(cin, cout):
    return nn.ConvTranspose2d(cin, cout, 2, stride=2, bias=False)


class TorchBasic(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride=1, shortcut=None, up=False, base_width=64):
        super().__init__()
        self.conv1 = _deconv(cin, planes) if up else _conv(cin, planes, 3, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv(planes, planes, 3)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut_name = "upsample" if up else "downsample"
        setattr(self, self.shortcut_name, shortcut)

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        shortcut = getattr(self, self.shortcut_name)
        return self.relu(out + (x if shortcut is None else shortcut(x)))


class TorchBottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride=1, shortcut=None, up=False, base_width=64):
        super().__init__()
        width = int(planes * base_width / 64)
        self.conv1 = _conv(cin, width, 1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _deconv(width, width) if up else _conv(width, width, 3, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv(width, planes * 4, 1)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut_name = "upsample" if up else "downsample"
        setattr(self, self.shortcut_name, shortcut)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = getattr(self, self.shortcut_name)
        return self.relu(out + (x if shortcut is None else shortcut(x)))


TORCH_BLOCKS = {"basic": TorchBasic, "bottleneck": TorchBottleneck}


def _official_init(module):
    for m in module.modules():
        if isinstance(m, nn.Conv2d):  # ConvTranspose2d is not a Conv2d: it keeps torch's default init
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


class TorchTeacher(TorchResNet):
    """torchvision ResNet layout (stem, layer1-4, fc, from tests/torch_reference.py) with the official encoder's
    initialisation; forward returns layer1-3 as the official encoder uses them."""

    def __init__(self, arch):
        super().__init__(arch)
        _official_init(self)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        a = self.layer1(x)
        b = self.layer2(a)
        return [a, b, self.layer3(b)]


class TorchOCBE(nn.Module):
    """The official ``BN_layer`` (MFF + OCE; conv4/bn4 defined, unused)."""

    def __init__(self, arch):
        super().__init__()
        kind, _, oce_blocks, _, width = TORCH_ARCHS[arch]
        block = TORCH_BLOCKS[kind]
        e = block.expansion
        self.conv1, self.bn1 = _conv(64 * e, 128 * e, 3, 2), nn.BatchNorm2d(128 * e)
        self.conv2, self.bn2 = _conv(128 * e, 256 * e, 3, 2), nn.BatchNorm2d(256 * e)
        self.conv3, self.bn3 = _conv(128 * e, 256 * e, 3, 2), nn.BatchNorm2d(256 * e)
        self.conv4, self.bn4 = _conv(1024 * e, 512 * e, 1), nn.BatchNorm2d(512 * e)
        self.relu = nn.ReLU(inplace=True)
        shortcut = nn.Sequential(_conv(768 * e, 512 * e, 1, 2), nn.BatchNorm2d(512 * e))
        layers = [block(768 * e, 512, 2, shortcut, base_width=width)]
        layers += [block(512 * e, 512, base_width=width) for _ in range(1, oce_blocks)]
        self.bn_layer = nn.Sequential(*layers)
        _official_init(self)

    def forward(self, x):
        l1 = self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x[0]))))))
        l2 = self.relu(self.bn3(self.conv3(x[1])))
        return self.bn_layer(torch.cat([l1, l2, x[2]], 1)).contiguous()


class TorchDecoder(nn.Module):
    """The official ``de_resnet`` decoder: returns [layer3, layer2, layer1] outputs."""

    def __init__(self, arch):
        super().__init__()
        kind, _, _, blocks, width = TORCH_ARCHS[arch]
        block = TORCH_BLOCKS[kind]
        cin = 512 * block.expansion
        for index, (planes, count) in enumerate(zip((256, 128, 64), blocks)):
            cout = planes * block.expansion
            shortcut = nn.Sequential(_deconv(cin, cout), nn.BatchNorm2d(cout))
            layers = [block(cin, planes, 2, shortcut, up=True, base_width=width)]
            cin = cout
            layers += [block(cout, planes, base_width=width) for _ in range(1, count)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*layers))
        _official_init(self)

    def forward(self, x):
        a = self.layer1(x)
        b = self.layer2(a)
        return [self.layer3(b), b, a]


def torch_flattened_loss(a, b):
    """Official ``loss_fucntion``."""
    cos = nn.CosineSimilarity()
    return sum(torch.mean(1 - cos(x.view(x.shape[0], -1), y.view(y.shape[0], -1))) for x, y in zip(a, b))


def torch_per_pixel_loss(a, b):
    return sum(torch.mean(1 - F.cosine_similarity(x, y, dim=1)) for x, y in zip(a, b))


def torch_summed_map(teacher_features, student_features, size):
    """Official ``cal_anomaly_map(amap_mode='a')`` before the Gaussian, for a batch: (N, size, size)."""
    total = 0
    for t, s in zip(teacher_features, student_features):
        amap = (1 - F.cosine_similarity(s, t)).unsqueeze(1)
        total = total + F.interpolate(amap, size=size, mode="bilinear", align_corners=True)
    return total[:, 0]


def build_torch_reference(arch, seed=0):
    """``(teacher, ocbe, decoder)`` with the official initialisation (random teacher)."""
    torch.manual_seed(seed)
    return TorchTeacher(arch).eval(), TorchOCBE(arch), TorchDecoder(arch)


def randomize_batchnorm(modules, seed=0):
    """Random BatchNorm affine parameters and running statistics (near 1/0), so that the conversion of all four
    BatchNorm tensors is exercised (with the default 1/0 and 0/1 a swapped mapping would go unnoticed)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in modules:
            for m in module.modules():
                if isinstance(m, nn.BatchNorm2d):
                    n = m.num_features
                    m.weight.copy_(1 + 0.1 * torch.randn(n, generator=generator))
                    m.bias.copy_(0.1 * torch.randn(n, generator=generator))
                    m.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                    m.running_var.copy_(1 + 0.5 * torch.rand(n, generator=generator))


def numpy_state(module):
    return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


# ----------------------------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------------------------
def _max_error(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


@pytest.fixture(scope="module")
def converted_wrn50(tmp_path_factory):
    """A random official WRN50 model saved as the official code does, converted with the tool, loaded in Paddle."""
    import convert_rd4ad_checkpoint

    from common.core.checkpoint import read_checkpoint
    from rd4ad.checkpoint import load

    folder = tmp_path_factory.mktemp("official")
    teacher, ocbe, decoder = build_torch_reference("wide_resnet50_2", seed=1)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32))
    randomize_batchnorm([teacher, ocbe, decoder])
    torch.save({"bn": ocbe.state_dict(), "decoder": decoder.state_dict()}, folder / "wres50_bottle.pth")
    torch.save(teacher.state_dict(), folder / "wide_resnet50_2-random.pth")
    dst = convert_rd4ad_checkpoint.main(["--ckpt", str(folder / "wres50_bottle.pth"), "--cls", "bottle",
                                         "--output_dir", str(folder / "output"),
                                         "--teacher", str(folder / "wide_resnet50_2-random.pth"),
                                         "--image_size", "64"])
    detector, config, _ = load(dst)
    model, meta = detector.model, read_checkpoint(dst, "rd4ad.pdparams", "RD4AD", {"meta"}, "")["meta"]
    return {"torch": (teacher, ocbe, decoder), "paddle": model, "config": config, "meta": meta, "x": x.numpy(),
            "dst": dst}


def _relative_error(ours, reference):
    """max |ours - reference| / max |reference|."""
    reference = np.asarray(reference)
    return _max_error(ours, reference) / float(np.abs(reference).max())


def _norm_error(ours, reference):
    """||ours - reference|| / ||reference||."""
    reference = np.asarray(reference, dtype=np.float64)
    return float(np.linalg.norm(np.asarray(ours, dtype=np.float64) - reference) / np.linalg.norm(reference))


def test_converted_checkpoint_forward_matches_torch(converted_wrn50):
    """Eval mode: each module on the same input as its torch counterpart, and the whole chain end to end.

    Tolerance: 1e-4 of the largest activation (random-init activations grow with depth, up to ~100 at layer3).
    """
    import paddle

    teacher, ocbe, decoder = converted_wrn50["torch"]
    model = converted_wrn50["paddle"]
    x = converted_wrn50["x"]
    for module in (ocbe, decoder):
        module.eval()
    with torch.no_grad():
        t_feats = teacher(torch.from_numpy(x))
        t_embedding = ocbe(t_feats)
        t_out = decoder(t_embedding)
    model.eval()
    with paddle.no_grad():
        p_feats = model.teacher(paddle.to_tensor(x))
        p_embedding_same_input = model.bn([paddle.to_tensor(f.numpy()) for f in t_feats])
        p_out_same_input = model.decoder(paddle.to_tensor(t_embedding.numpy()))
        p_out_chained = model.decoder(model.bn(p_feats))
    assert converted_wrn50["config"].backbone == "wide_resnet50_2" and converted_wrn50["config"].image_size == 64
    assert "converted from the official PyTorch checkpoint wres50_bottle.pth" in converted_wrn50["meta"]["source"]
    assert [tuple(f.shape) for f in p_feats] == [(2, 256, 16, 16), (2, 512, 8, 8), (2, 1024, 4, 4)]
    assert tuple(p_embedding_same_input.shape) == (2, 2048, 2, 2)
    for ours, ref in zip(p_feats, t_feats):
        assert _relative_error(ours.numpy(), ref.numpy()) < 1e-4
    assert _relative_error(p_embedding_same_input.numpy(), t_embedding.numpy()) < 1e-4
    for ours_same, ours_chained, ref in zip(p_out_same_input, p_out_chained, t_out):
        assert _relative_error(ours_same.numpy(), ref.numpy()) < 1e-4
        assert _relative_error(ours_chained.numpy(), ref.numpy()) < 1e-4


def test_training_loss_gradients_and_adam_steps_match_torch(converted_wrn50):
    """OCBE and decoder in train mode (batch statistics): losses of 3 Adam steps and the first-step gradients.

    The backward pass of this random-init network in train mode is ill-conditioned: PyTorch's own float32 gradients
    differ from its float64 ones by ~1 % (norm), because float32 rounding in the forward moves activations across
    ReLU kinks and BatchNorm's batch statistics spread the effect. So Paddle's gradients must be as close to the
    float64 ones as PyTorch's float32 gradients are; block-level gradients are compared tightly in the next test.
    """
    import copy

    import paddle

    from rd4ad.loss import distillation_loss

    teacher, ocbe, decoder = converted_wrn50["torch"]
    model = converted_wrn50["paddle"]
    x = converted_wrn50["x"]
    with torch.no_grad():
        features = [f.double() for f in teacher(torch.from_numpy(x))]
    ocbe64, decoder64 = copy.deepcopy(ocbe).double().train(), copy.deepcopy(decoder).double().train()
    optimizers = {
        "torch": torch.optim.Adam(list(decoder.parameters()) + list(ocbe.parameters()), lr=0.005,
                                  betas=(0.5, 0.999)),
        "float64": torch.optim.Adam(list(decoder64.parameters()) + list(ocbe64.parameters()), lr=0.005,
                                    betas=(0.5, 0.999)),
        "paddle": paddle.optimizer.Adam(learning_rate=0.005, beta1=0.5, beta2=0.999, epsilon=1e-8,
                                        parameters=model.trainable_parameters()),
    }
    ocbe.train()
    decoder.train()
    model.train()
    losses = {name: [] for name in optimizers}
    for step in range(3):
        t_inputs = teacher(torch.from_numpy(x))
        t_loss = torch_flattened_loss(t_inputs, decoder(ocbe(t_inputs)))
        exact_loss = torch_flattened_loss(features, decoder64(ocbe64(features)))
        teacher_features, student_features = model(paddle.to_tensor(x))
        p_loss = distillation_loss(teacher_features, student_features, "flattened")
        for loss, optimizer in ((t_loss, optimizers["torch"]), (exact_loss, optimizers["float64"])):
            optimizer.zero_grad()
            loss.backward()
        optimizers["paddle"].clear_grad()
        p_loss.backward()
        if step == 0:
            pairs = (("decoder.layer1.0.conv2", decoder.layer1[0].conv2, decoder64.layer1[0].conv2,
                      model.decoder.layer1[0].conv2),
                     ("bn.conv1", ocbe.conv1, ocbe64.conv1, model.bn.conv1),
                     ("decoder.layer3.5.conv3", decoder.layer3[5].conv3, decoder64.layer3[5].conv3,
                      model.decoder.layer3[5].conv3))
            for name, t32, t64, ours in pairs:
                exact = t64.weight.grad.numpy()
                torch_error = _norm_error(t32.weight.grad.numpy(), exact)
                assert _norm_error(ours.weight.grad.numpy(), exact) <= 2 * torch_error + 1e-6, name
            assert model.bn.conv4.weight.grad is None  # unused, as in the official code
        for optimizer in optimizers.values():
            optimizer.step()
        for name, loss in (("torch", t_loss), ("float64", exact_loss), ("paddle", p_loss)):
            losses[name].append(float(loss))
    exact = np.array(losses["float64"])
    assert abs(losses["paddle"][0] - losses["torch"][0]) < 1e-5
    torch_deviation = np.abs(np.array(losses["torch"]) - exact).max()
    assert np.abs(np.array(losses["paddle"]) - exact).max() <= 3 * torch_deviation + 1e-5, losses
    assert losses["paddle"][-1] < losses["paddle"][0]


@pytest.mark.parametrize("kind", ["basic", "bottleneck"])
def test_blocks_train_mode_forward_and_backward_match_torch(kind):
    """Each residual block type (OCE-style with a strided conv, decoder-style with a transposed conv, plain) in
    train mode: outputs, input gradients and parameter gradients to 1e-5 of their largest value."""
    import paddle

    from common.networks.backbones import load_state_dict_strict, torch_to_paddle_state_dict
    from rd4ad import model as rd4ad_model

    torch_block, paddle_block = TORCH_BLOCKS[kind], rd4ad_model.BLOCKS[kind]
    e, width = torch_block.expansion, (64 if kind == "basic" else 128)
    cases = (  # (torch block, paddle block, input shape)
        (torch_block(16 * e, 16, 2, nn.Sequential(_conv(16 * e, 16 * e, 1, 2), nn.BatchNorm2d(16 * e)),
                     base_width=width),
         paddle_block(16 * e, 16, 2, paddle.nn.Sequential(rd4ad_model.conv1x1(16 * e, 16 * e, 2),
                                                          paddle.nn.BatchNorm2D(16 * e)), base_width=width),
         (2, 16 * e, 8, 8)),
        (torch_block(16 * e, 8, 2, nn.Sequential(_deconv(16 * e, 8 * e), nn.BatchNorm2d(8 * e)), up=True,
                     base_width=width),
         paddle_block(16 * e, 8, 2, paddle.nn.Sequential(rd4ad_model.deconv2x2(16 * e, 8 * e),
                                                         paddle.nn.BatchNorm2D(8 * e)), transposed=True,
                      base_width=width),
         (2, 16 * e, 4, 4)),
        (torch_block(8 * e, 8, base_width=width), paddle_block(8 * e, 8, base_width=width), (2, 8 * e, 8, 8)),
    )
    rng = np.random.default_rng(5)
    for torch_layer, paddle_layer, shape in cases:
        randomize_batchnorm([torch_layer], seed=int(rng.integers(1000)))
        load_state_dict_strict(paddle_layer, torch_to_paddle_state_dict(numpy_state(torch_layer)))
        torch_layer.train()
        paddle_layer.train()
        x = rng.standard_normal(shape).astype(np.float32)
        t_x = torch.tensor(x, requires_grad=True)
        p_x = paddle.to_tensor(x, stop_gradient=False)
        t_out, p_out = torch_layer(t_x), paddle_layer(p_x)
        weights = rng.standard_normal(tuple(t_out.shape)).astype(np.float32)
        (t_out * torch.from_numpy(weights)).sum().backward()
        (p_out * paddle.to_tensor(weights)).sum().backward()
        assert _relative_error(p_out.numpy(), t_out.detach().numpy()) < 1e-5
        assert _relative_error(p_x.grad.numpy(), t_x.grad.numpy()) < 1e-5
        paddle_params = [p for p in paddle_layer.parameters() if p.trainable]
        assert len(paddle_params) == len(list(torch_layer.parameters()))
        for t_param, p_param in zip(torch_layer.parameters(), paddle_params):
            assert _relative_error(p_param.grad.numpy(), t_param.grad.numpy()) < 1e-5


def test_loss_forms_match_torch():
    import paddle

    from rd4ad.loss import distillation_loss

    rng = np.random.default_rng(3)
    shapes = [(3, 8, 16, 16), (3, 16, 8, 8), (3, 32, 4, 4)]
    a = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    b = [x + 0.7 * rng.standard_normal(x.shape).astype(np.float32) for x in a]
    ta, tb = [torch.from_numpy(x) for x in a], [torch.from_numpy(x) for x in b]
    pa, pb = [paddle.to_tensor(x) for x in a], [paddle.to_tensor(x) for x in b]
    flattened = float(distillation_loss(pa, pb, "flattened"))
    per_pixel = float(distillation_loss(pa, pb, "per_pixel"))
    assert abs(flattened - float(torch_flattened_loss(ta, tb))) < 1e-6
    assert abs(per_pixel - float(torch_per_pixel_loss(ta, tb))) < 1e-6
    assert abs(flattened - per_pixel) > 1e-3  # the two forms really differ


def test_anomaly_map_matches_official_computation():
    """Cosine maps, align_corners upsampling and sum vs torch; SciPy smoothing as test.py; GaussianBlur vs SciPy."""
    import paddle
    from scipy.ndimage import gaussian_filter

    from common.networks.postprocess import GaussianBlur, gaussian_smooth
    from rd4ad.detector import SummedAnomalyMap, image_scores

    rng = np.random.default_rng(4)
    shapes = [(2, 16, 32, 32), (2, 32, 16, 16), (2, 64, 8, 8)]
    t = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    s = [x + rng.standard_normal(x.shape).astype(np.float32) * rng.uniform(0.1, 1.5) for x in t]
    reference = torch_summed_map([torch.from_numpy(x) for x in t], [torch.from_numpy(x) for x in s], 128).numpy()
    ours = SummedAnomalyMap([32, 16, 8], 128)([paddle.to_tensor(x) for x in t], [paddle.to_tensor(x) for x in s])
    assert _max_error(ours.numpy()[:, 0], reference) < 1e-5
    smoothed_reference = np.stack([gaussian_filter(m.astype(np.float64), sigma=4) for m in reference])
    assert _max_error(gaussian_smooth(ours.numpy()[:, 0], 4), smoothed_reference) < 1e-5
    blurred = GaussianBlur(128, sigma=4)(ours)
    assert _max_error(blurred.numpy()[:, 0], smoothed_reference) < 1e-5
    np.testing.assert_allclose(image_scores(blurred).numpy(), smoothed_reference.reshape(2, -1).max(1), atol=1e-5)
