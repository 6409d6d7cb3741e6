"""The PyTorch converters checked tensor by tensor (issue 21): every parameter and buffer of every converted network
equals its source (torch's BatchNorm ``running_mean``/``running_var`` are Paddle's ``_mean``/``_variance``, a Linear
weight is transposed, convolution and transposed-convolution kernels are copied as they are), nothing is left out on
either side, and the converted model gives the torch model's maps and scores on a batch (1e-4 relative).

Sources have random BatchNorm statistics and affine parameters, so a swapped weight/bias or mean/variance shows.
Each test skips alone without torch.
"""
import os
import sys

import numpy as np
import paddle
import pytest

from conftest import REPO_ROOT, method_dir

if os.path.join(REPO_ROOT, "scripts") not in sys.path:
    sys.path.insert(0, os.path.join(REPO_ROOT, "scripts"))

RTOL = 1e-4


def _torch():
    return pytest.importorskip("torch")


def torch_state(module):
    return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


def assert_converted_exactly(paddle_state, source, linear=(), source_prefix="", skip_source=()):
    """Every tensor of ``source`` (torch names, minus ``skip_source`` prefixes) equals its Paddle counterpart
    exactly, and the Paddle state holds no tensor without a source."""
    expected = {}
    for key, value in source.items():
        if key.endswith("num_batches_tracked") or key.startswith(tuple(skip_source)):
            continue
        name = key[len(source_prefix):] if key.startswith(source_prefix) else key
        name = name.replace(".running_mean", "._mean").replace(".running_var", "._variance")
        expected[name] = value.T if key in linear else value
    ours = {k: (v.numpy() if hasattr(v, "numpy") else np.asarray(v)) for k, v in paddle_state.items()}
    assert sorted(ours) == sorted(expected)
    for name, value in expected.items():
        assert ours[name].shape == value.shape and ours[name].dtype == value.dtype, name
        assert np.array_equal(ours[name], value), name


def relative_error(ours, reference):
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


# ----------------------------------------------------------------------------------------------------------------
# convert_torch_weights.py (torchvision backbones)
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["resnet18", "vgg16"])
def test_torchvision_backbone_converts_tensor_by_tensor_and_gives_the_logits(arch, tmp_path):
    torch = _torch()
    from convert_torch_weights import main as convert_main

    from common.networks.backbones import TORCH_LINEAR_WEIGHTS, build_backbone
    from torch_reference import TorchResNet, TorchVGG16, randomise_batchnorm

    torch.manual_seed(3)
    model = randomise_batchnorm(TorchResNet(arch) if arch != "vgg16" else TorchVGG16(), seed=4)
    src = tmp_path / f"{arch}.pth"
    torch.save(model.state_dict(), src)
    dst = convert_main(["--arch", arch, "--src", str(src), "--dst", str(tmp_path / f"{arch}.pdparams")])
    converted = paddle.load(dst)
    assert_converted_exactly(converted, torch_state(model), linear=TORCH_LINEAR_WEIGHTS[arch])
    ours = build_backbone(arch, weights=dst)
    ours.eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        if arch == "vgg16":  # torch_reference's VGG16 holds torchvision's modules without a forward
            expected = model.classifier(torch.flatten(model.avgpool(model.features(torch.from_numpy(x))), 1))
        else:
            expected = model(torch.from_numpy(x))[1]
    expected = expected.numpy()
    with paddle.no_grad():
        logits = ours(paddle.to_tensor(x)).numpy()
    assert relative_error(logits, expected) < RTOL


# ----------------------------------------------------------------------------------------------------------------
# convert_rd4ad_checkpoint.py
# ----------------------------------------------------------------------------------------------------------------
def test_rd4ad_checkpoint_converts_tensor_by_tensor_and_gives_the_maps_and_scores(tmp_path):
    torch = _torch()
    method_dir("RD4AD-paddle")
    import convert_rd4ad_checkpoint
    from scipy.ndimage import gaussian_filter
    from test_rd4ad_reference import build_torch_reference, randomize_batchnorm, torch_summed_map

    from rd4ad.checkpoint import load

    teacher, ocbe, decoder = build_torch_reference("resnet18", seed=2)
    randomize_batchnorm([teacher, ocbe, decoder], seed=3)
    torch.save({"bn": ocbe.state_dict(), "decoder": decoder.state_dict()}, tmp_path / "res18_bottle.pth")
    torch.save(teacher.state_dict(), tmp_path / "resnet18-random.pth")
    dst = convert_rd4ad_checkpoint.main(["--ckpt", str(tmp_path / "res18_bottle.pth"), "--cls", "bottle",
                                         "--output_dir", str(tmp_path / "output"), "--backbone", "resnet18",
                                         "--teacher", str(tmp_path / "resnet18-random.pth"), "--image_size", "64"])
    detector, config, _ = load(dst)
    model = detector.model
    assert_converted_exactly(model.bn.state_dict(), torch_state(ocbe))
    assert_converted_exactly(model.decoder.state_dict(), torch_state(decoder))
    # the teacher keeps the stem and layer1-3 (the official encoder's outputs); layer4 and fc are not used
    assert_converted_exactly(model.teacher.state_dict(), torch_state(teacher), skip_source=("layer4.", "fc."))
    x = np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype(np.float32)
    for module in (teacher, ocbe, decoder):
        module.eval()
    with torch.no_grad():  # official test.py: cal_anomaly_map(amap_mode='a'), gaussian_filter(sigma=4), max
        inputs = teacher(torch.from_numpy(x))
        summed = torch_summed_map(inputs, decoder(ocbe(inputs)), 64).double().numpy()
    maps = np.stack([gaussian_filter(m, sigma=4) for m in summed])
    with paddle.no_grad():
        ours_maps, ours_scores = (t.numpy() for t in detector(paddle.to_tensor(x)))
    assert relative_error(ours_maps[:, 0], maps) < RTOL
    assert relative_error(ours_scores, maps.reshape(2, -1).max(axis=1)) < RTOL


# ----------------------------------------------------------------------------------------------------------------
# convert_kdad_checkpoint.py
# ----------------------------------------------------------------------------------------------------------------
def test_kdad_checkpoint_converts_tensor_by_tensor_and_gives_the_scores(tmp_path):
    torch = _torch()
    method_dir("KDAD-paddle")
    import convert_kdad_checkpoint
    from test_kdad_reference import OfficialCloner, official_detection_scores, official_expert

    from common.networks.backbones import TORCH_LINEAR_WEIGHTS
    from kdad.checkpoint import load
    from torch_reference import TorchVGG16, randomise_batchnorm

    torch.manual_seed(5)
    vgg = TorchVGG16().eval()
    cloner = randomise_batchnorm(OfficialCloner(), seed=6)
    torch.save(cloner.state_dict(), tmp_path / "Cloner_bottle_epoch_601.pth")
    torch.save(vgg.state_dict(), tmp_path / "vgg16-random.pth")
    out = convert_kdad_checkpoint.run(["--ckpt", str(tmp_path / "Cloner_bottle_epoch_601.pth"), "--cls", "bottle",
                                       "--output_dir", str(tmp_path / "output"),
                                       "--expert", str(tmp_path / "vgg16-random.pth"), "--image_size", "64"])
    assert_converted_exactly(paddle.load(str(tmp_path / "output" / "vgg16_torchvision.pdparams")), torch_state(vgg),
                             linear=TORCH_LINEAR_WEIGHTS["vgg16"])
    detector, config, _ = load(out)
    network = detector.network
    assert_converted_exactly(network.cloner.state_dict(), torch_state(cloner))
    # the expert is VGG16's features (the classifier is not used)
    assert_converted_exactly(network.expert.state_dict(), torch_state(vgg), skip_source=("classifier.",))
    x = np.random.default_rng(2).random((2, 3, 64, 64), dtype=np.float32)
    with torch.no_grad():
        expected = official_detection_scores(cloner(torch.from_numpy(x)),
                                             official_expert(vgg.features, torch.from_numpy(x)), config.lamda)
    with paddle.no_grad():
        scores = detector.scores(paddle.to_tensor(x)).numpy()
    assert relative_error(scores, expected.numpy()) < RTOL


# ----------------------------------------------------------------------------------------------------------------
# convert_efficientad_checkpoint.py
# ----------------------------------------------------------------------------------------------------------------
def test_efficientad_set_converts_tensor_by_tensor_with_the_official_statistics_quantiles_and_scores(tmp_path):
    """A teacher + student + autoencoder set: every tensor; the teacher mean/std over the training split and the
    q_a/q_b quantiles over the validation split as nelson1425's ``teacher_normalization``/``map_normalization``
    compute them on the same images; maps (padded by 4, resized to the input) and scores as its ``test``."""
    torch = _torch()
    method_dir("EfficientAD-paddle")
    import convert_efficientad_checkpoint
    from test_efficientad_reference import (
        torch_autoencoder,
        torch_map_normalization,
        torch_pdn_small,
        torch_predict,
        torch_teacher_normalization,
    )

    from common.data.synthetic import make_class
    from efficientad import checkpoint
    from efficientad.data import dataset, training_split

    root = str(tmp_path / "data")
    make_class(root, "bottle", size=64, n_train=10, n_test_good=1, n_test_defect=1, seed=0)
    torch.manual_seed(7)
    channels, hidden, ae_hidden = 8, (8, 16), (2, 4)
    nets = {"teacher": torch_pdn_small(channels, hidden=hidden).eval(),
            "student": torch_pdn_small(2 * channels, hidden=hidden).eval(),
            "autoencoder": torch_autoencoder(channels, hidden=ae_hidden).eval()}
    args = []
    for name, net in nets.items():
        torch.save(net.state_dict(), tmp_path / f"{name}_final_state.pth")
        args += [f"--{name}", str(tmp_path / f"{name}_final_state.pth")]
    path = convert_efficientad_checkpoint.main(args + [
        "--cls", "bottle", "--data_dir", root, "--output_dir", str(tmp_path / "out"), "--out_channels",
        str(channels), "--width_divisor", "16", "--threads", "2"])
    detector, config, _ = checkpoint.load(path)
    for name, net in nets.items():
        assert_converted_exactly(getattr(detector, name).state_dict(), torch_state(net))

    def batches(samples, size):
        images = [item[0] for item in dataset(samples, config)]
        return [torch.from_numpy(np.stack(images[i:i + size])) for i in range(0, len(images), size)]

    train, validation = training_split(config, root, "bottle")
    assert len(train) == 9 and len(validation) == 1  # nelson1425's 90/10 split
    with torch.no_grad():
        mean, std = torch_teacher_normalization(nets["teacher"], batches(train, config.batch_size))
        quantiles = torch_map_normalization(batches(validation, 1), *nets.values(), mean, std, channels)
    assert relative_error(detector.teacher_mean.numpy(), mean.numpy()) < RTOL
    assert relative_error(detector.teacher_std.numpy(), std.numpy()) < RTOL
    ours_quantiles = [float(getattr(detector, f"q_{name}").numpy()[0])
                      for name in ("st_start", "st_end", "ae_start", "ae_end")]
    assert ours_quantiles == pytest.approx([float(q) for q in quantiles], rel=RTOL)
    x = np.random.default_rng(3).standard_normal((2, 3, 256, 256)).astype(np.float32)
    with torch.no_grad():
        combined, _, _ = torch_predict(torch.from_numpy(x), *nets.values(), mean, std, q=quantiles,
                                       channels=channels)
        padded = torch.nn.functional.pad(combined, (4, 4, 4, 4))
        maps = torch.nn.functional.interpolate(padded, (256, 256), mode="bilinear").numpy()
    with paddle.no_grad():
        ours_maps, ours_scores = (t.numpy() for t in detector(paddle.to_tensor(x)))
    assert relative_error(ours_maps, maps) < RTOL
    assert relative_error(ours_scores, maps.reshape(2, -1).max(axis=1)) < RTOL
