"""EfficientAD-paddle: what is specific to its training and data (the networks, losses and statistics are checked
against PyTorch in test_efficientad_reference.py).

Split and --val_list, the autoencoder-branch colour jitter, the StepLR boundary, the penalty folder, bit-identical
resume, the PyTorch converter (state dict, pickled module, anomalib keys, a trained set evaluated by main.py) and
the evaluation at the original image resolution against a plain statement of nelson1425's ``test``.
"""
import os

import numpy as np
import pytest
from PIL import Image

from conftest import REPO_ROOT, method_dir  # noqa: E402

method_dir("EfficientAD-paddle")

import paddle  # noqa: E402

from common.core.errors import UserError  # noqa: E402
from common.data.readers.mvtec import train_samples  # noqa: E402
from common.data.samples import Sample  # noqa: E402
from common.data.synthetic import make_class  # noqa: E402
from efficientad import checkpoint, data, trainer  # noqa: E402
from efficientad import model as em  # noqa: E402
from efficientad.config import Config  # noqa: E402
from method_harness import command  # noqa: E402

TINY = dict(model_size="small", out_channels=8, width_divisor=16, teacher_weights="random", backbone="resnet18",
            backbone_weights="random", eval_batch_size=4, print_steps=100)


@pytest.fixture
def torch():
    """torch for the tests that compare with it or convert its files; each of them skips alone without torch."""
    return pytest.importorskip("torch")


def make_data(root, classes=("bottle",), size=64, n_train=10):
    for cls in classes:
        make_class(str(root), cls, size=size, n_train=n_train, n_test_good=2, n_test_defect=1, seed=0)
    return str(root)


# -- split -------------------------------------------------------------------------------------------------------
def test_random_split_sizes_seed_and_order():
    samples = [Sample(f"/d/train/good/{i:03d}.png", 0, "good") for i in range(209)]   # bottle's size
    train, validation = data.random_validation_split(samples, 0.1, 42)
    assert (len(train), len(validation)) == (188, 21)          # int(0.9 * 209) = 188, as the reference
    assert not {s.path for s in train} & {s.path for s in validation}
    assert train == sorted(train, key=lambda s: s.path)        # file order kept on both sides
    again = data.random_validation_split(samples, 0.1, 42)
    assert again == (train, validation)
    assert data.random_validation_split(samples, 0.1, 43)[1] != validation
    with pytest.raises(UserError):
        data.random_validation_split(samples[:1])


def test_val_list_by_relative_path_or_name(tmp_path):
    root = make_data(tmp_path / "data")
    samples = train_samples(root, "bottle")
    listing = tmp_path / "val.txt"
    listing.write_text("# validation images\ntrain/good/001.png\n\n004.png\n")
    config = Config(**TINY, val_list=str(listing))
    train, validation = data.training_split(config, root, "bottle")
    assert [os.path.basename(s.path) for s in validation] == ["001.png", "004.png"]
    assert len(train) == len(samples) - 2
    listing.write_text("train/good/999.png\n")
    with pytest.raises(UserError, match="999.png"):
        data.training_split(config, root, "bottle")
    with pytest.raises(UserError, match="not found"):
        data.training_split(Config(**TINY, val_list=str(tmp_path / "missing.txt")), root, "bottle")


# -- augmentation ------------------------------------------------------------------------------------------------
def _plain_jitter(array, choice, factor):
    """torchvision's PIL ColorJitter ops restated: blend with black / the mean gray level / the grayscale image."""
    rgb = array.astype(np.float64)
    gray = np.asarray(Image.fromarray(array).convert("L"), np.float64)
    if choice == 0:
        degenerate = np.zeros_like(rgb)
    elif choice == 1:
        degenerate = np.full_like(rgb, int(gray.mean() + 0.5))
    else:
        degenerate = np.repeat(gray[..., None], 3, axis=2)
    return np.clip(degenerate + factor * (rgb - degenerate), 0, 255)


def test_color_jitter_is_one_of_three_pil_jitters_before_the_resize():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    image = Image.fromarray(array)
    for choice in range(3):
        for factor in (0.8, 1.13, 1.2):
            ours = np.asarray(data.color_jitter(image, choice, factor), np.float64)
            assert np.abs(ours - _plain_jitter(array, choice, factor)).max() <= 1.0   # PIL rounds to 8 bit
    draws = data.draw_jitter(np.random.default_rng(1), 30000)
    counts = np.bincount(draws[:, 0].astype(int), minlength=3) / len(draws)
    assert np.allclose(counts, 1 / 3, atol=0.01)                       # RandomChoice: uniform
    assert draws[:, 1].min() >= 0.8 and draws[:, 1].max() < 1.2         # ColorJitter(x=0.2): U[0.8, 1.2]
    # the jitter is applied at full resolution, then the image is resized (nelson1425 order)
    items = data.TrainingItems(["unused"], [(0, 1, 1.2)], 16)
    items._open = lambda index: image
    plain, jittered = items[0]
    np.testing.assert_array_equal(jittered, data.to_network_input(data.color_jitter(image, 1, 1.2), 16))
    np.testing.assert_array_equal(plain, data.to_network_input(image, 16))


# -- schedule ----------------------------------------------------------------------------------------------------
def test_step_lr_drops_at_int_095_steps_like_torch(torch):
    for steps in (70000, 101):
        config = Config(**TINY, train_steps=steps)
        scheduler = trainer.lr_schedule(config)
        parameter = torch.nn.Parameter(torch.zeros(1))
        reference_optimizer = torch.optim.Adam([parameter], lr=1e-4, weight_decay=1e-5)
        reference = torch.optim.lr_scheduler.StepLR(reference_optimizer, step_size=int(0.95 * steps), gamma=0.1)
        boundary = int(0.95 * steps)
        checked = {boundary - 1, boundary, boundary + 1, steps - 1}
        for step in range(steps):   # the lr used at iteration ``step`` (before that iteration's scheduler step)
            if step in checked:
                assert scheduler.get_lr() == pytest.approx(reference.get_last_lr()[0], rel=1e-12), step
                assert scheduler.get_lr() == pytest.approx(1e-4 if step < boundary else 1e-5, rel=1e-12)
            if step > boundary + 1 and step < steps - 2:
                continue
            scheduler.step()
            reference_optimizer.step()
            reference.step()
            if step == boundary + 1:   # jump both to the end without stepping each iteration
                scheduler.step(steps - 2)
                for _ in range(steps - 3 - step):
                    reference.step()


# -- penalty, teacher ----------------------------------------------------------------------------------------------
def test_penalty_folder_missing_is_one_line_and_none_is_off(tmp_path, capsys):
    assert data.penalty_paths(None) is None and data.penalty_paths("none") is None
    with pytest.raises(UserError, match="penalty folder not found"):
        data.penalty_paths(str(tmp_path / "imagenet"))
    root = make_data(tmp_path / "data")
    with pytest.raises(SystemExit) as exit_info:
        command("efficientad", "train", "--cls", "bottle", "--data_dir", root, "--output_dir", tmp_path / "out",
                "--config", os.path.join(REPO_ROOT, "EfficientAD-paddle", "configs", "tiny.yaml"),
                "--penalty_dir", tmp_path / "imagenet")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "penalty folder not found" in err[-1]


def test_a_teacher_file_is_required_by_default():
    detector = checkpoint.build_detector_for(Config(**dict(TINY, teacher_weights=None)))
    with pytest.raises(UserError) as info:
        checkpoint.load_teacher_file(detector.teacher, None)
    assert "convert_efficientad_checkpoint.py" in str(info.value) and "pretrain_teacher.py" in str(info.value)


# -- resume ------------------------------------------------------------------------------------------------------
def _detector_state(class_dir):
    return {k: np.asarray(v) for k, v in paddle.load(os.path.join(class_dir, checkpoint.CHECKPOINT))["detector"]
            .items()}


def test_resume_is_bit_identical(tmp_path, monkeypatch):
    """Interrupted after step 3 (state saved at step 2), resumed: the same weights, statistics and quantiles as an
    uninterrupted run (dropout, shuffling, jitter, penalty images and grayscale draws all continue exactly)."""
    from common.core.runtime import configure

    root = make_data(tmp_path / "data", ("bottle", "carpet"), n_train=6)
    config = Config(**TINY, train_steps=5, save_interval=2, penalty_dir=os.path.join(root, "carpet", "train"))
    configure("cpu", 2, config.seed)
    trainer.train(config, "bottle", root, str(tmp_path / "full"))
    expected = _detector_state(tmp_path / "full" / "bottle")

    real_step, calls = trainer.train_step, []

    def interrupted_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    configure("cpu", 2, config.seed)
    monkeypatch.setattr(trainer, "train_step", interrupted_step)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(config, "bottle", root, str(tmp_path / "resumed"))
    monkeypatch.setattr(trainer, "train_step", real_step)
    configure("cpu", 2, 12345)   # a different global seed: everything must come from the saved state
    trainer.train(config, "bottle", root, str(tmp_path / "resumed"), resume="auto")
    resumed = _detector_state(tmp_path / "resumed" / "bottle")
    assert set(resumed) == set(expected)
    for name in expected:
        np.testing.assert_array_equal(resumed[name], expected[name], err_msg=name)
    assert not np.array_equal(expected["q_st_end"], np.full(1, 0.1, np.float32))   # quantiles were set


# -- converter ---------------------------------------------------------------------------------------------------
def _torch_pdn_small(out_channels, hidden):
    a, b = hidden
    import torch

    nn = torch.nn
    return nn.Sequential(nn.Conv2d(3, a, 4), nn.ReLU(inplace=True), nn.AvgPool2d(2, 2),
                         nn.Conv2d(a, b, 4), nn.ReLU(inplace=True), nn.AvgPool2d(2, 2),
                         nn.Conv2d(b, b, 3), nn.ReLU(inplace=True), nn.Conv2d(b, out_channels, 4))


def _torch_autoencoder(out_channels, hidden):
    a, b = hidden
    import torch

    nn = torch.nn
    layers = []
    for cin, cout in ((3, a), (a, a), (a, b), (b, b), (b, b)):
        layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.ReLU(inplace=True)]
    layers.append(nn.Conv2d(b, b, 8))
    for size in (3, 8, 15, 32, 63, 127):
        layers += [nn.Upsample(size=size, mode="bilinear"), nn.Conv2d(b, b, 4, stride=1, padding=2),
                   nn.ReLU(inplace=True), nn.Dropout(0.2)]
    layers += [nn.Upsample(size=56, mode="bilinear"), nn.Conv2d(b, b, 3, stride=1, padding=1),
               nn.ReLU(inplace=True), nn.Conv2d(b, out_channels, 3, stride=1, padding=1)]
    return nn.Sequential(*layers)


def _anomalib_keys(sequential_state):
    """anomalib's PDN names its convs conv1, conv2, ... in forward order."""
    indices = sorted({int(k.split(".")[0]) for k in sequential_state})
    return {f"conv{indices.index(int(k.split('.')[0])) + 1}.{k.split('.')[1]}": v for k, v in sequential_state.items()}


def _converter():
    import importlib.util

    path = os.path.join(REPO_ROOT, "scripts", "convert_efficientad_checkpoint.py")
    spec = importlib.util.spec_from_file_location("convert_efficientad_checkpoint", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_converter_reads_state_dicts_pickled_modules_and_anomalib_teachers(torch, tmp_path, capsys):
    convert = _converter()
    torch.manual_seed(0)
    teacher = _torch_pdn_small(8, (8, 16)).eval()
    files = {"state": tmp_path / "teacher_small.pth", "module": tmp_path / "teacher_final.pth",
             "anomalib": tmp_path / "pretrained_teacher_small.pth"}
    torch.save(teacher.state_dict(), files["state"])
    torch.save(teacher, files["module"])
    torch.save(_anomalib_keys(teacher.state_dict()), files["anomalib"])
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        expected = teacher(torch.from_numpy(x)).numpy()
    for kind, path in files.items():
        output = tmp_path / f"{kind}.pdparams"
        convert.main(["--teacher", str(path), "--output", str(output), "--out_channels", "8", "--width_divisor", "16"])
        warned = "executes code" in capsys.readouterr().err
        assert warned == (kind == "module"), kind      # only the pickled module needs the unsafe load
        pdn = checkpoint.build_pdn_for(Config(**TINY), 8)
        checkpoint.load_teacher_file(pdn, str(output))
        with paddle.no_grad():
            ours = pdn(paddle.to_tensor(x)).numpy()
        assert np.abs(ours - expected).max() <= 1e-5 * np.abs(expected).max(), kind
    with pytest.raises(UserError, match="neither"):
        convert.main(["--teacher", str(files["state"]), "--output", str(tmp_path / "m.pdparams"),
                      "--model_size", "medium", "--out_channels", "8", "--width_divisor", "16"])


def test_converted_set_is_evaluated_by_main(torch, tmp_path, capsys):
    """A torch teacher + student + autoencoder (pickled modules, as efficientad.py saves them) -> a class model with
    statistics from the data, which ``main.py --mode eval`` evaluates; its maps equal the torch computation."""
    convert = _converter()
    root = make_data(tmp_path / "data", n_train=6)
    torch.manual_seed(1)
    nets = {"teacher": _torch_pdn_small(8, (8, 16)), "student": _torch_pdn_small(16, (8, 16)),
            "autoencoder": _torch_autoencoder(8, (2, 4))}
    args = []
    for name, net in nets.items():
        torch.save(net.eval(), tmp_path / f"{name}_final.pth")
        args += [f"--{name}", str(tmp_path / f"{name}_final.pth")]
    out = tmp_path / "out"
    convert.main(args + ["--cls", "bottle", "--data_dir", root, "--output_dir", str(out), "--out_channels", "8",
                         "--width_divisor", "16", "--threads", "2"])
    metrics = command("efficientad", "eval", "--cls", "bottle", "--data_dir", root, "--output_dir", out)["bottle"]
    assert set(metrics) == {"image_auroc", "pixel_auroc", "au_pro", "image_f1_at_threshold"}
    detector, config, thresholds = checkpoint.load(str(out / "bottle"))
    assert thresholds["held_out"] and config.teacher_weights.endswith("teacher_final.pth")
    x = np.random.default_rng(2).standard_normal((1, 3, 256, 256)).astype(np.float32)
    mean, std = (torch.from_numpy(detector.teacher_mean.numpy()), torch.from_numpy(detector.teacher_std.numpy()))
    with torch.no_grad():
        t = (nets["teacher"](torch.from_numpy(x)) - mean) / std
        s = nets["student"](torch.from_numpy(x))
        a = nets["autoencoder"](torch.from_numpy(x))
        map_st = torch.mean((t - s[:, :8]) ** 2, dim=1, keepdim=True)
        map_ae = torch.mean((a - s[:, 8:]) ** 2, dim=1, keepdim=True)
    with paddle.no_grad():
        ours_st, ours_ae = detector.distance_maps(paddle.to_tensor(x))
    np.testing.assert_allclose(ours_st.numpy(), map_st.numpy(), rtol=1e-4)
    np.testing.assert_allclose(ours_ae.numpy(), map_ae.numpy(), rtol=1e-4)


# -- evaluation at the original resolution ---------------------------------------------------------------------------
def test_evaluation_at_original_resolution_equals_plain_statement(torch, tmp_path):
    """Maps resized from the padded 64x64 map to each image's size (here 80x80, not the 256 input), masks read at
    full size > 127, score = map max; AUROC from sklearn on those scores; AU-PRO on those maps and masks."""
    from sklearn.metrics import roc_auc_score

    from common.data.images import open_mask
    from common.metrics import au_pro
    from efficientad import evaluate

    root = make_data(tmp_path / "data", size=80)
    config = Config(**TINY)
    paddle.seed(3)
    detector = checkpoint.build_detector_for(config)
    detector.set_map_quantiles(0.01, 0.5, 0.02, 0.6)
    dataset = data.test_dataset(config, root, "bottle")
    metrics, _, maps, scores, masks = evaluate.test_metrics(detector, config, dataset)
    plain_maps, plain_masks = [], []
    for i, sample in enumerate(dataset.samples):
        picture = Image.open(sample.path)
        with paddle.no_grad():
            combined = detector.normalized_maps(paddle.to_tensor(dataset[i][0][None]))[0].numpy()
        padded = torch.nn.functional.pad(torch.from_numpy(combined), (4, 4, 4, 4))
        plain_maps.append(torch.nn.functional.interpolate(padded, (picture.height, picture.width), mode="bilinear")[0, 0].numpy())
        mask = np.zeros((picture.height, picture.width), bool)
        if sample.mask_path:
            mask = np.asarray(open_mask(sample.mask_path)) > 127
        plain_masks.append(mask)
    plain_maps, plain_masks = np.stack(plain_maps), np.stack(plain_masks)
    assert maps.shape == (len(dataset), 80, 80)
    np.testing.assert_allclose(maps, plain_maps, rtol=0, atol=1e-5 * np.abs(plain_maps).max())
    np.testing.assert_array_equal(masks, plain_masks)
    np.testing.assert_allclose(scores, plain_maps.reshape(len(dataset), -1).max(axis=1), rtol=1e-5)
    assert metrics["image_auroc"] == pytest.approx(roc_auc_score(dataset.labels, plain_maps.max(axis=(1, 2))))
    assert metrics["au_pro"] == pytest.approx(au_pro(plain_masks, plain_maps), abs=1e-6)


def test_nan_loss_stops_training_with_one_line(tmp_path, monkeypatch):
    """A non-finite loss ends training with a TrainingDiverged (one ``error:`` line) and no model or thresholds."""
    import efficientad.trainer as training

    root = make_data(tmp_path / "data")

    def zero_std(teacher, batches):
        channels = teacher.out_channels
        return np.zeros((1, channels, 1, 1), np.float32), np.zeros((1, channels, 1, 1), np.float32)

    monkeypatch.setattr(training, "teacher_normalization", zero_std)   # (T - 0) / 0: inf and nan
    with pytest.raises(training.TrainingDiverged, match="loss is nan"):
        training.train(Config(**TINY, train_steps=3), "bottle", root, str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out" / "bottle" / "thresholds.json")
    assert not os.path.exists(tmp_path / "out" / "bottle" / checkpoint.CHECKPOINT)


# -- export --------------------------------------------------------------------------------------------------------
def test_detector_exports_and_runs_under_onednn(tmp_path):
    """to_static(full_graph=True) + jit.save, then Paddle Inference with oneDNN on 2 threads equals dygraph.

    Several runs: a matmul-based resize of the autoencoder's 1x1 code gave different garbage on most runs (not
    all) under oneDNN, which is why the autoencoder replicates that pixel instead (model.ReplicateResize).
    """
    from paddle.static import InputSpec

    from common.core.inference import Predictor, export_static
    from efficientad import detector as ed
    from efficientad import model as em

    def relative_error(ours, reference):
        return float(np.abs(ours - reference).max() / np.abs(reference).max())

    paddle.seed(12)
    detector = ed.EfficientADDetector(em.PDNSmall(32, hidden_channels=(16, 32)),
                                      em.PDNSmall(64, hidden_channels=(16, 32)),
                                      em.Autoencoder(32, hidden_channels=(8, 16)))
    rng = np.random.default_rng(12)
    detector.set_teacher_statistics(rng.random(32) - 0.5, rng.random(32) + 0.5)
    detector.set_map_quantiles(0.01, 0.2, 0.02, 0.3)
    detector.eval()
    x = np.random.default_rng(13).standard_normal((2, 3, 256, 256)).astype(np.float32)
    with paddle.no_grad():
        dygraph_map, dygraph_score = (t.numpy() for t in detector(paddle.to_tensor(x)))
    export_static(detector, [InputSpec([None, 3, 256, 256], "float32", name="x")], str(tmp_path / "inference"))
    predictor = Predictor(str(tmp_path), threads=2, use_mkldnn=True)
    # the statistics are buffers: they travel with the state dict (the resize matrices are not saved)
    state = detector.state_dict()
    assert {"teacher_mean", "teacher_std", "q_st_start", "q_st_end", "q_ae_start", "q_ae_end"} <= set(state)
    assert not any("rows" in k or "cols" in k for k in state)
    for _ in range(4):
        exported_map, exported_score = predictor.run(x)
        assert exported_map.shape == (2, 1, 256, 256) and exported_score.shape == (2,)
        assert relative_error(exported_map, dygraph_map) < 1e-4
        assert relative_error(exported_score, dygraph_score) < 1e-4


# -- teacher pretraining target --------------------------------------------------------------------------------------
class FixedBackbone(paddle.nn.Layer):
    """Stand-in for the WRN-101 layer2/layer3 taps: returns given maps (the projection is what is tested here)."""

    channels = (512, 1024)

    def __init__(self, maps):
        super().__init__()
        self.maps = maps

    def forward(self, x):
        return [paddle.to_tensor(m) for m in self.maps]


def test_pretraining_extractor_uses_wide_resnet101_layer2_and_layer3(monkeypatch):
    """The default backbone is a frozen ResNetFeatures('wide_resnet101_2', ('layer2', 'layer3')), recorded through
    a stand-in (building the real 127M-parameter network takes seconds; common's tests cover ResNetFeatures)."""
    calls = []

    def fake_resnet_features(arch, layers, weights):
        calls.append((arch, tuple(layers), weights))
        return FixedBackbone([np.zeros((1, 512, 4, 4), np.float32), np.zeros((1, 1024, 2, 2), np.float32)])

    monkeypatch.setattr(em, "ResNetFeatures", fake_resnet_features)
    extractor = em.PretrainingTargetExtractor(weights="some.pdparams")
    assert calls == [("wide_resnet101_2", ("layer2", "layer3"), "some.pdparams")]
    assert tuple(extractor(paddle.zeros([1, 3, 32, 32])).shape) == (1, 384, 4, 4)
