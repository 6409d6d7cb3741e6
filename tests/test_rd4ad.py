"""RD4AD-paddle: architecture, initialisation, loss and scoring against NumPy/SciPy references, and a tiny
train -> eval -> export -> infer run on synthetic data (resnet18 teacher with random weights, 64 px)."""
import json
import math
import os

import numpy as np
import paddle
import pytest
from scipy import ndimage

from conftest import method_dir

method_dir("RD4AD-paddle")

import rd4ad  # noqa: E402
from common.evaluation.evaluate import evaluate  # noqa: E402
from common.networks.postprocess import MatrixResize  # noqa: E402
from method_harness import train_tiny  # noqa: E402
from rd4ad import checkpoint, data  # noqa: E402
from rd4ad import trainer as rd4ad_trainer  # noqa: E402
from rd4ad.detector import RD4ADDetector  # noqa: E402
from rd4ad.loss import distillation_loss  # noqa: E402
from rd4ad.model import ARCHITECTURES, OCBE, Decoder, ReverseDistillation, count_parameters  # noqa: E402


# ----------------------------------------------------------------------------------------------------------------
# Architecture and initialisation (Wide-ResNet-50-2 widths)
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def wrn50_student():
    paddle.seed(0)
    arch = ARCHITECTURES["wide_resnet50_2"]
    return OCBE(arch), Decoder(arch)


def test_wrn50_parameter_counts_match_the_official_model(wrn50_student):
    ocbe, decoder = wrn50_student
    unused = count_parameters(ocbe.conv4) + count_parameters(ocbe.bn4)
    assert count_parameters(ocbe) - unused == 58_885_120  # OCE width 1024 (width_per_group 128)
    assert unused == 8_392_704  # conv4 (1x1, 4096 -> 2048) + bn4, never used in forward
    assert count_parameters(decoder) == 24_917_504
    # OCE bottleneck width 1024, not 512 as in the earlier Paddle port
    assert ocbe.bn_layer[0].conv2.weight.shape == [1024, 1024, 3, 3]
    assert ocbe.bn_layer[0].downsample[0].weight.shape == [2048, 3072, 1, 1]


def test_wrn50_shapes_at_small_input(wrn50_student):
    ocbe, decoder = wrn50_student
    ocbe.eval()
    decoder.eval()
    features = [paddle.randn([2, 256, 16, 16]), paddle.randn([2, 512, 8, 8]), paddle.randn([2, 1024, 4, 4])]
    with paddle.no_grad():
        embedding = ocbe(features)
        outputs = decoder(embedding)
    assert embedding.shape == [2, 2048, 2, 2]
    assert [o.shape for o in outputs] == [f.shape for f in features]


def test_official_initialisation_statistics(wrn50_student):
    ocbe, decoder = wrn50_student
    # Conv2D: kaiming normal, fan_out, ReLU gain -> std sqrt(2 / (out_channels * k * k))
    for conv in (ocbe.bn_layer[0].conv1, ocbe.conv2, decoder.layer1[1].conv2):
        weight = conv.weight.numpy()
        expected = math.sqrt(2.0 / (weight.shape[0] * weight.shape[2] * weight.shape[3]))
        assert abs(weight.std() / expected - 1) < 0.02
        assert abs(weight.mean()) < 0.02 * expected
    # Conv2DTranspose: PyTorch default kaiming_uniform(a=sqrt(5)) -> U(+-1/sqrt(out_channels * k * k))
    for deconv in (decoder.layer1[0].conv2, decoder.layer2[0].upsample[0]):
        weight = deconv.weight.numpy()
        bound = 1.0 / math.sqrt(weight.shape[1] * weight.shape[2] * weight.shape[3])
        assert np.abs(weight).max() <= bound
        assert np.abs(weight).max() > 0.99 * bound
        assert abs(weight.std() / (bound / math.sqrt(3)) - 1) < 0.02
    for layer in (ocbe, decoder):
        for sub in layer.sublayers():
            if isinstance(sub, paddle.nn.BatchNorm2D):
                assert np.all(sub.weight.numpy() == 1) and np.all(sub.bias.numpy() == 0)


def test_teacher_is_frozen_and_student_trains():
    paddle.seed(0)
    model = ReverseDistillation("resnet18", backbone_weights="random")
    model.train()
    assert not model.teacher.training and model.bn.training and model.decoder.training
    trainable = {id(p) for p in model.trainable_parameters()}
    assert not any(id(p) in trainable for p in model.teacher.parameters())
    teacher_features, student_features = model(paddle.randn([2, 3, 64, 64]))
    assert [f.shape for f in teacher_features] == [[2, 64, 16, 16], [2, 128, 8, 8], [2, 256, 4, 4]]
    assert [f.shape for f in student_features] == [f.shape for f in teacher_features]


# ----------------------------------------------------------------------------------------------------------------
# Loss and scoring
# ----------------------------------------------------------------------------------------------------------------
def _numpy_cosine(a, b, axis):
    return (a * b).sum(axis) / np.maximum(np.linalg.norm(a, axis=axis) * np.linalg.norm(b, axis=axis), 1e-8)


def test_losses_equal_numpy_references():
    rng = np.random.default_rng(0)
    shapes = [(4, 8, 16, 16), (4, 16, 8, 8), (4, 32, 4, 4)]
    teacher = [rng.standard_normal(s) for s in shapes]
    student = [t + rng.standard_normal(t.shape) for t in teacher]
    flattened = sum(np.mean(1 - _numpy_cosine(t.reshape(4, -1), s.reshape(4, -1), 1))
                    for t, s in zip(teacher, student))
    per_pixel = sum(np.mean(1 - _numpy_cosine(t, s, 1)) for t, s in zip(teacher, student))
    as_paddle = [[paddle.to_tensor(x.astype(np.float32)) for x in xs] for xs in (teacher, student)]
    assert abs(float(distillation_loss(*as_paddle, "flattened")) - flattened) < 1e-5
    assert abs(float(distillation_loss(*as_paddle, "per_pixel")) - per_pixel) < 1e-5


def test_flattened_loss_stays_within_1e_5_of_float64_at_the_real_size():
    """WRN50 map sizes at 256 px, a nearly converged student (1 - cos ~ 1e-3), where float32 sums drift by 5e-3."""
    rng = np.random.default_rng(1)
    shapes = [(2, 256, 64, 64), (2, 512, 32, 32), (2, 1024, 16, 16)]
    teacher = [np.abs(rng.standard_normal(s)).astype(np.float32) for s in shapes]
    student = [(t + 0.05 * rng.standard_normal(t.shape)).astype(np.float32) for t in teacher]
    reference = sum(np.mean(1 - _numpy_cosine(t.reshape(2, -1).astype(np.float64), s.reshape(2, -1).astype(np.float64),
                                              1)) for t, s in zip(teacher, student))
    ours = float(distillation_loss([paddle.to_tensor(t) for t in teacher], [paddle.to_tensor(s) for s in student]))
    assert abs(ours - reference) / reference < 1e-5


def _numpy_bilinear_align_corners(image, size):
    """Straightforward per-pixel bilinear interpolation with align_corners=True (float64)."""
    h, w = image.shape
    out = np.empty((size, size))
    for i in range(size):
        y = i * (h - 1) / (size - 1)
        y0 = min(int(np.floor(y)), h - 1)
        y1, fy = min(y0 + 1, h - 1), y - y0
        for j in range(size):
            x = j * (w - 1) / (size - 1)
            x0 = min(int(np.floor(x)), w - 1)
            x1, fx = min(x0 + 1, w - 1), x - x0
            out[i, j] = ((1 - fy) * ((1 - fx) * image[y0, x0] + fx * image[y0, x1])
                         + fy * ((1 - fx) * image[y1, x0] + fx * image[y1, x1]))
    return out


@pytest.mark.parametrize("in_size,out_size", [(8, 64), (16, 64), (5, 37), (1, 4)])
def test_map_upsampling_equals_reference_and_paddle_interpolate(in_size, out_size):
    """RD4AD's upsampling (bilinear, align_corners=True, as matrix products) vs a per-pixel reference."""
    from common.networks.postprocess import upsample

    maps = np.random.default_rng(in_size).standard_normal((2, 1, in_size, in_size)).astype(np.float32)
    ours = MatrixResize(in_size, out_size, mode="bilinear", align_corners=True)(paddle.to_tensor(maps)).numpy()
    reference = np.stack([_numpy_bilinear_align_corners(m[0].astype(np.float64), out_size) for m in maps])
    np.testing.assert_allclose(ours[:, 0], reference, atol=1e-5)  # float32 source positions vs exact ones
    interpolated = upsample(paddle.to_tensor(maps), out_size, mode="bilinear", align_corners=True).numpy()
    np.testing.assert_allclose(ours, interpolated, atol=2e-6)


def test_scorer_equals_numpy_scipy_pipeline():
    """Cosine maps along channels, align_corners upsampling, sum, Gaussian sigma 4 (GaussianBlur vs SciPy), max."""
    paddle.seed(1)
    model = ReverseDistillation("resnet18", backbone_weights="random")
    model.eval()
    scorer = RD4ADDetector(model, 64)
    x = paddle.randn([2, 3, 64, 64])
    with paddle.no_grad():
        teacher_features, student_features = model(x)
        raw = scorer.raw_map(x).numpy()[:, 0]
        smoothed, scores = (t.numpy() for t in scorer(x))
    expected = 0
    for t, s in zip(teacher_features, student_features):
        cosine_map = 1 - _numpy_cosine(t.numpy().astype(np.float64), s.numpy().astype(np.float64), 1)
        expected = expected + np.stack([_numpy_bilinear_align_corners(m, 64) for m in cosine_map])
    np.testing.assert_allclose(raw, expected, atol=1e-5)
    reference = np.stack([ndimage.gaussian_filter(m, sigma=4, mode="reflect", truncate=4.0) for m in expected])
    np.testing.assert_allclose(smoothed[:, 0], reference, atol=1e-5)
    np.testing.assert_allclose(scores, reference.reshape(2, -1).max(1), atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# Training and evaluation specific to RD4AD (the shared end-to-end checks are in test_method_shape.py)
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(synthetic_root, tmp_path_factory):
    """bottle trained for 2 epochs with the tiny config (resnet18, random teacher, 64 px), 10 % held out."""
    output_dir = str(tmp_path_factory.mktemp("rd4ad_output"))
    train_tiny("rd4ad", synthetic_root, output_dir, "--validation_fraction", 0.1)
    return synthetic_root, output_dir


def test_training_writes_checkpoint_state_and_log(trained):
    _, output_dir = trained
    folder = os.path.join(output_dir, "bottle")
    for name in ("rd4ad.pdparams", "train_state.pdparams", "thresholds.json", "train_log.jsonl"):
        assert os.path.isfile(os.path.join(folder, name)), name
    with open(os.path.join(folder, "train_log.jsonl"), encoding="utf-8") as handle:
        log = [json.loads(line) for line in handle]
    assert [r["epoch"] for r in log] == [1, 2] and all(np.isfinite(r["loss"]) for r in log)
    with open(os.path.join(folder, "thresholds.json"), encoding="utf-8") as handle:
        thresholds = json.load(handle)
    assert thresholds["held_out"] is True and thresholds["num_images"] == 1  # 10 % of 12 images
    state = paddle.load(os.path.join(folder, "rd4ad.pdparams"))
    assert state["config"]["backbone"] == "resnet18" and state["meta"]["epochs_done"] == 2
    assert "teacher" in state  # random teacher weights travel with the checkpoint


def test_default_trains_on_every_image_and_labels_the_thresholds(synthetic_root, tmp_path):
    train_tiny("rd4ad", synthetic_root, str(tmp_path), "--epochs", 1)
    with open(tmp_path / "bottle" / "thresholds.json", encoding="utf-8") as handle:
        thresholds = json.load(handle)
    assert thresholds["held_out"] is False and thresholds["num_images"] == 12
    assert "also used for training" in thresholds["source"]


def test_eval_metrics_use_the_official_scoring(trained):
    """The metrics equal sklearn on maps computed here with SciPy from the raw model maps (official test.py)."""
    from sklearn.metrics import roc_auc_score

    data_dir, output_dir = trained
    detector, config, thresholds = checkpoint.load(os.path.join(output_dir, "bottle"))
    dataset = data.test_dataset(config, data_dir, "bottle")
    images = paddle.to_tensor(np.stack([dataset[i][0] for i in range(len(dataset))]))
    with paddle.no_grad():
        raw = detector.raw_map(images).numpy()[:, 0].astype(np.float64)
    smoothed = np.stack([ndimage.gaussian_filter(m, sigma=4) for m in raw])
    metrics = evaluate(rd4ad, detector, config, thresholds, "bottle", data_dir, output_dir)
    assert metrics["pixel_auroc"] == pytest.approx(roc_auc_score(dataset.masks().ravel(), smoothed.ravel()),
                                                   abs=1e-6)
    assert metrics["image_auroc"] == pytest.approx(roc_auc_score(dataset.labels, smoothed.reshape(len(raw), -1)
                                                                 .max(1)), abs=1e-9)


def test_resume_continues_exactly(trained, tmp_path):
    """1 epoch, then --resume to 2 epochs, gives the same weights as 2 epochs in one go."""
    data_dir, output_dir = trained
    resumed_dir = str(tmp_path / "resumed")
    train_tiny("rd4ad", data_dir, resumed_dir, "--validation_fraction", 0.1, "--epochs", 1)
    train_tiny("rd4ad", data_dir, resumed_dir, "--validation_fraction", 0.1, "--epochs", 2, "--resume")
    straight = paddle.load(os.path.join(output_dir, "bottle", "rd4ad.pdparams"))
    resumed = paddle.load(os.path.join(resumed_dir, "bottle", "rd4ad.pdparams"))
    for part in ("bn", "decoder"):
        for name, value in straight[part].items():
            np.testing.assert_array_equal(resumed[part][name].numpy(), value.numpy(), err_msg=name)
    with open(os.path.join(resumed_dir, "bottle", "train_log.jsonl"), encoding="utf-8") as handle:
        assert [json.loads(line)["epoch"] for line in handle] == [1, 2]


def _exit_message(capsys, *argv):
    with pytest.raises(SystemExit) as exit_info:
        train_tiny("rd4ad", *argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ")
    return err[-1]


def test_resume_with_other_options_is_refused(trained, capsys):
    data_dir, output_dir = trained
    message = _exit_message(capsys, data_dir, output_dir, "--validation_fraction", 0.1, "--lr", 0.001, "--resume")
    assert "lr 0.005 -> 0.001" in message


def test_nan_loss_stops_with_a_clear_message(trained, tmp_path, capsys, monkeypatch):
    data_dir, _ = trained

    def nan_loss(teacher_features, student_features, kind="flattened"):
        return distillation_loss(teacher_features, student_features, kind) * float("nan")

    monkeypatch.setattr(rd4ad_trainer, "distillation_loss", nan_loss)
    message = _exit_message(capsys, data_dir, str(tmp_path / "nan"))
    assert "loss is nan at epoch 1, step 1" in message and "lower --lr" in message
    assert not os.path.exists(tmp_path / "nan" / "bottle" / "rd4ad.pdparams")


def test_a_checkpoint_saved_with_the_earlier_option_names_still_loads(trained, tmp_path):
    """Checkpoints written before the options had one name per idea (``calibration_fraction``) load unchanged."""
    data_dir, output_dir = trained
    record = paddle.load(os.path.join(output_dir, "bottle", checkpoint.CHECKPOINT))
    record["config"]["calibration_fraction"] = record["config"].pop("validation_fraction")
    old = tmp_path / "old" / "bottle"
    old.mkdir(parents=True)
    paddle.save(record, str(old / checkpoint.CHECKPOINT))
    detector, config, _ = checkpoint.load(str(old))
    assert config == checkpoint.load(os.path.join(output_dir, "bottle"))[1]
