"""KDAD-paddle's command line, training state and converter (model/loss/metric alignment: test_kdad_reference.py)."""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

from common.cli.commands import run as run_command
from common.core import config as cfg
from common.core.errors import UserError
from common.data.readers.mvtec import train_samples
from common.data.synthetic import make_dataset
from common.evaluation.thresholds import calibrate, read_thresholds
from common.training.log import TRAIN_LOG
from conftest import REPO_ROOT, method_dir

ROOT = method_dir("KDAD-paddle")
TINY = os.path.join(ROOT, "configs", "tiny.yaml")

import kdad  # noqa: E402
from kdad import checkpoint, trainer  # noqa: E402
from kdad import config as kdad_config
from kdad.data import dataset, training_split  # noqa: E402
from kdad.model import KDADNetwork  # noqa: E402


@pytest.fixture(scope="module")
def small_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("kdad_data")
    make_dataset(str(root), ("bottle",), size=32, n_train=4, n_test_good=2, n_test_defect=1, seed=0)
    return str(root)


def train(root, out, *extra):
    return run_command(kdad, "train", ["--cls", "bottle", "--data_dir", root, "--output_dir", str(out),
                                         "--config", TINY, "--image_size", "32", "--batch_size", "2",
                                         "--threads", "2", *map(str, extra)])


def test_default_yaml_restates_the_official_mvtec_settings():
    # configs/config.yaml is the official repository's default (CIFAR-10): tests/test_one_class_methods.py
    values = cfg.load_yaml(kdad_config.DEFAULT_CONFIG)
    assert values == {f.name: f.default for f in dataclasses.fields(kdad_config.Config)}
    c = kdad_config.Config()
    assert (c.epochs, c.total_epochs, c.batch_size, c.lr, c.lamda, c.image_size) == (601, 602, 64, 1e-3, 0.5,
                                                                                          128)


def test_resume_is_bit_identical_and_eval_writes_both_protocols(small_root, tmp_path):
    train(small_root, tmp_path / "full", "--num_epochs", 2)
    train(small_root, tmp_path / "split", "--num_epochs", 0)  # epoch 0 only, then epochs 1..2 resumed
    train(small_root, tmp_path / "split", "--num_epochs", 2, "--resume")
    full = paddle.load(str(tmp_path / "full" / "bottle" / checkpoint.CHECKPOINT))["cloner"]
    split = paddle.load(str(tmp_path / "split" / "bottle" / checkpoint.CHECKPOINT))["cloner"]
    assert full.keys() == split.keys()
    for key in full:
        np.testing.assert_array_equal(np.asarray(full[key]), np.asarray(split[key]), err_msg=key)
    metrics = run_command(kdad, "eval", ["--cls", "bottle", "--data_dir", small_root, "--output_dir",
                                           str(tmp_path / "full"), "--threads", "2"])["bottle"]
    assert {"image_auroc", "pixel_auroc", "au_pro", "kdad_detection_auroc", "kdad_localization_auroc"} <= set(metrics)
    assert os.path.isfile(tmp_path / "full" / "results" / "KDAD_bottle.json")


def test_nan_loss_stops_with_one_line(small_root, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer.MseDirectionLoss, "forward", lambda self, e, c: paddle.sum(c[0]) * float("nan"))
    with pytest.raises(UserError, match="loss is nan at epoch 0, step 1"):
        train(small_root, tmp_path)
    assert not os.path.exists(tmp_path / "bottle" / checkpoint.CHECKPOINT)


def test_official_cloner_checkpoint_converts_and_evaluates(small_root, tmp_path):
    torch = pytest.importorskip("torch")
    # an official-style cloner state dict: make_layers(cfg B, use_bias=False, batch_norm=True) names
    cfg_b = [16, 16, "M", 16, 128, "M", 16, 16, 256, "M", 16, 16, 512, "M", 16, 16, 512, "M"]
    layers, channels = [], 3
    for i, v in enumerate(cfg_b):
        if v == "M":
            layers.append(torch.nn.MaxPool2d(2, 2))
            continue
        layers.append(torch.nn.Conv2d(channels, v, 3, padding=1, bias=False))
        if i + 1 < len(cfg_b) and cfg_b[i + 1] == "M":
            layers.append(torch.nn.ReLU())
        else:
            layers += [torch.nn.BatchNorm2d(v), torch.nn.ReLU()]
        channels = v
    cloner = torch.nn.Module()
    cloner.features = torch.nn.Sequential(*layers)
    with torch.no_grad():
        for m in cloner.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    torch.save(cloner.state_dict(), tmp_path / "cloner.pth")
    script = os.path.join(REPO_ROOT, "scripts", "convert_kdad_checkpoint.py")
    run = subprocess.run([sys.executable, script, "--ckpt", str(tmp_path / "cloner.pth"), "--cls", "bottle",
                          "--output_dir", str(tmp_path / "out"), "--backbone_weights", "random",
                          "--image_size", "32"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    state = paddle.load(str(tmp_path / "out" / "bottle" / checkpoint.CHECKPOINT))
    expected = cloner.state_dict()
    np.testing.assert_array_equal(np.asarray(state["cloner"]["features.1._variance"]),
                                  expected["features.1.running_var"].numpy())
    config = checkpoint.load(str(tmp_path / "out" / "bottle"))[1]
    assert config.image_size == 32 and config.cloner_config == "B"
    with pytest.raises(UserError, match="not an official KDAD cloner"):
        checkpoint.convert_cloner({"bn.weight": np.zeros(3)})


def test_backbone_weights_file_is_the_expert_of_training_and_evaluation(small_root, tmp_path):
    """A saved VGG16 state dict given as --backbone_weights is the expert training used (the thresholds it wrote are
    reproduced with it, and not with another expert) and the one the saved model loads."""
    paddle.seed(3)
    weights = tmp_path / "vgg16_random.pdparams"
    paddle.save(KDADNetwork(expert_weights=None).expert.state_dict(), str(weights))
    paddle.seed(4)
    other = tmp_path / "vgg16_other.pdparams"
    paddle.save(KDADNetwork(expert_weights=None).expert.state_dict(), str(other))
    out = tmp_path / "out"
    train(small_root, out, "--backbone_weights", weights)
    state = paddle.load(str(out / "bottle" / checkpoint.CHECKPOINT))
    assert "expert" not in state and state["config"]["backbone_weights"] == str(weights)  # reloaded from the file
    detector, config, _ = checkpoint.load(str(out / "bottle"))
    network = detector.network
    saved = paddle.load(str(weights))
    for key, value in network.expert.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), np.asarray(saved[key]), err_msg=key)

    stored = read_thresholds(str(out / "bottle"))
    images = dataset(train_samples(small_root, "bottle"), config)

    def threshold(net):
        return calibrate(checkpoint.make_detector(net, config), images, config, held_out=False)

    np.testing.assert_allclose(threshold(network)["image_threshold"], stored["image_threshold"], rtol=1e-5)
    swapped = checkpoint.load(str(out / "bottle"), backbone_weights=str(other))[0].network
    assert abs(threshold(swapped)["image_threshold"] - stored["image_threshold"]) > 1e-3 * abs(
        stored["image_threshold"])


def test_validation_fraction_holds_images_out_for_the_thresholds(tmp_path):
    root = tmp_path / "data"
    make_dataset(str(root), ("bottle",), size=32, n_train=10, n_test_good=1, n_test_defect=1, seed=0)
    out = tmp_path / "out"
    train(str(root), out, "--validation_fraction", 0.1)
    record = read_thresholds(str(out / "bottle"))
    everything = {s.path for s in train_samples(str(root), "bottle")}
    held = set(record["calibration_images"])
    assert record["held_out"] is True and "held out from training" in record["source"]
    assert record["num_images"] == len(held) == 1 and held < everything
    # the held-out image is not in the training split that the trainer used
    train_split, calibration_split = training_split(
        dataclasses.replace(kdad_config.Config(), validation_fraction=0.1), str(root), "bottle")
    assert {s.path for s in calibration_split} == held and not held & {s.path for s in train_split}
    assert len(train_split) == 9


@pytest.mark.slow
def test_trains_with_two_processes_and_one_writer(tmp_path):
    """``paddle.distributed.launch`` with 2 CPU processes: training runs, only rank 0 writes (the cloner has
    BatchNorm and Paddle's CPU build has no sync_batch_norm, so the steps are not compared with one process)."""
    data = tmp_path / "data"
    make_dataset(str(data), ("bottle",), size=32, n_train=8, n_test_good=1, n_test_defect=1, seed=0)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = subprocess.run([sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir",
                          str(tmp_path / "logs"), "main.py", "--mode", "train", "--cls", "bottle", "--data_dir",
                          str(data), "--output_dir", str(out), "--config", TINY, "--image_size", "32",
                          "--threads", "1"], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with open(out / "bottle" / TRAIN_LOG, encoding="utf-8") as handle:
        log = [json.loads(line) for line in handle]
    assert [r["epoch"] for r in log] == [0, 1] and all(np.isfinite(r["loss"]) for r in log)  # one writer
    assert (out / "bottle" / checkpoint.CHECKPOINT).is_file() and (out / "bottle" / "thresholds.json").is_file()
    worker_logs = "".join(p.read_text() for p in (tmp_path / "logs").iterdir() if p.is_file())
    assert "2 processes" in worker_logs


def _network_with_random_batchnorm(dtype):
    paddle.seed(0)
    network = KDADNetwork(expert_weights=None)
    rng = np.random.default_rng(0)
    for layer in network.cloner.sublayers():
        if isinstance(layer, paddle.nn.BatchNorm2D):  # statistics and affine away from 0 / 1, so that they count
            channels = layer.weight.shape[0]
            layer._mean.set_value(rng.normal(0, 0.1, channels).astype(np.float32))
            layer._variance.set_value(rng.uniform(0.5, 1.5, channels).astype(np.float32))
            layer.weight.set_value(rng.uniform(0.5, 1.5, channels).astype(np.float32))
            layer.bias.set_value(rng.normal(0, 0.1, channels).astype(np.float32))
    network.eval()
    network.to(dtype=dtype)
    return network


@pytest.mark.parametrize("loss_form", ["code", "paper", "direction"])
def test_input_gradient_from_forward_ops_equals_autograd(loss_form):
    """The detector's backward (transposed convolutions, masks, BN scale, analytic loss gradient) against
    paddle.grad of the same per-image scores, in float64 so that ReLU/max-pool near-ties cannot flip."""
    from kdad.detector import KDADDetector

    network = _network_with_random_batchnorm("float64")
    detector = KDADDetector(network, image_size=32, loss_form=loss_form)
    x = paddle.to_tensor(np.random.default_rng(1).random((3, 3, 32, 32)))
    with paddle.no_grad():  # no autograd is needed
        gradients, scores = detector.input_gradients(x)
    leaf = x.detach()
    leaf.stop_gradient = False
    (expected,) = paddle.grad([paddle.sum(detector._scores64(*network(leaf)))], [leaf])
    np.testing.assert_allclose(gradients.numpy(), expected.numpy(), rtol=0, atol=1e-10 * np.abs(expected.numpy()).max())
    np.testing.assert_allclose(scores.numpy(), detector.scores(x).numpy(), rtol=1e-6)


def test_max_pool_gradient_goes_to_the_first_maximum_of_a_tie():
    from kdad.model import max_pool_input_gradient

    x = paddle.to_tensor(np.array([[[[1.0, 3.0, 2.0, 2.0], [3.0, 0.0, 2.0, 2.0], [0.0, 0.0, 5.0, 1.0],
                                     [0.0, 0.0, 1.0, 1.0]]]], np.float32))
    leaf = x.detach()
    leaf.stop_gradient = False
    pooled = paddle.nn.functional.max_pool2d(leaf, 2, 2)
    upstream = paddle.to_tensor(np.array([[[[10.0, 20.0], [30.0, 40.0]]]], np.float32))
    (expected,) = paddle.grad([pooled], [leaf], grad_outputs=[upstream])
    got = max_pool_input_gradient(upstream, x, pooled.detach())
    np.testing.assert_array_equal(got.numpy(), expected.numpy())
    assert got.numpy()[0, 0, 0, 1] == 10 and got.numpy()[0, 0, 1, 0] == 0  # the tie 3 / 3: first in row order
