"""Results files, tables, post-processing, pictures, the inference predictor, the CLI loop and run_all.sh."""
import argparse
import collections
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import paddle
import pytest
from PIL import Image
from scipy import ndimage

from common.cli import report
from common.cli.args import add_shared_args, run_per_class
from common.core import files
from common.core.errors import UserError
from common.core.inference import Predictor, export_static, find_model_files
from common.data.transforms import Preprocess
from common.deploy import predict
from common.deploy.benchmark import BenchmarkTimer
from common.deploy.folder import load_infer_config, save_infer_config
from common.evaluation import pictures as visualize
from common.evaluation import results
from common.networks.postprocess import GaussianBlur, MatrixResize, gaussian_smooth, upsample
from conftest import REPO_ROOT


# -- results and tables -------------------------------------------------------------------------------------
def test_atomic_json_and_results_record(tmp_path):
    path = results.write_results(str(tmp_path), "RD4AD", "bottle", {"image_auroc": np.float32(0.5),
                                                                    "pixel_auroc": float("nan")},
                                 {"image_auroc": "sklearn"}, {"backbone": "resnet18", "image_size": 64},
                                 seconds=1.23456, notes=["masks missing"])
    assert os.path.basename(path) == "RD4AD_bottle.json"
    assert os.listdir(tmp_path) == ["RD4AD_bottle.json"]  # no temp file left behind
    record = json.load(open(path))
    assert record["metrics"] == {"image_auroc": 0.5, "pixel_auroc": None}
    assert record["seconds"] == 1.235 and record["paddle_version"] == paddle.__version__
    assert record["notes"] == ["masks missing"] and record["config"]["backbone"] == "resnet18"


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "x.json"
    files.atomic_write_json(str(path), {"a": 1})

    def failing_save(tmp):
        open(tmp, "w").write("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        files.atomic_save(failing_save, str(path))
    assert json.load(open(path)) == {"a": 1} and os.listdir(tmp_path) == ["x.json"]


def test_markdown_table_against_paper(tmp_path):
    paper_file = tmp_path / "paper.yaml"
    paper_file.write_text(textwrap.dedent("""
        method: Demo
        source: a paper
        scale: fraction
        metrics:
          image_auroc: {protocol: p, values: {bottle: 0.9, wood: 0.8}, mean: 0.85}
    """))
    paper = report.load_paper(str(paper_file))
    records = [{"method": "Demo", "class": "wood", "metrics": {"image_auroc": 0.9, "au_pro": None}},
               {"method": "Demo", "class": "bottle", "metrics": {"image_auroc": 0.95, "au_pro": 0.5}}]
    lines = report.markdown_table(records, paper).splitlines()
    assert lines[0] == "| class | image_auroc | paper | Δ | au_pro |"
    assert lines[2] == "| bottle | 95.0 | 90.0 | +5.0 | 50.0 |"  # MVTec order: bottle before wood
    assert lines[3] == "| wood | 90.0 | 80.0 | +10.0 | – |"
    assert lines[4] == "| **mean (2)** | 92.5 | 85.0 | +7.5 | – |"
    one = report.markdown_table(records[1:], paper).splitlines()
    assert one[-1] == "| **mean (1)** | 95.0 | 90.0 | +5.0 | 50.0 |"  # paper mean only when all classes present


def test_make_table_cli(tmp_path):
    results.write_results(str(tmp_path), "Nope", "bottle", {"image_auroc": 1.0}, {"image_auroc": "x"}, {})
    out = subprocess.run([sys.executable, "scripts/make_table.py", str(tmp_path)], cwd=REPO_ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0 and "| bottle | 100.0 |" in out.stdout
    empty = subprocess.run([sys.executable, "scripts/make_table.py", str(tmp_path / "none")], cwd=REPO_ROOT,
                           capture_output=True, text=True)
    assert empty.returncode == 2 and empty.stderr.startswith("error: results folder not found")


def test_make_table_prints_the_paper_numbers_of_each_dataset_and_fold(tmp_path):
    """paper_results_DATASET.yaml: OrthoAD on KolektorSDD per fold (jnhwkim/orthoad README .953/.951/.976, mean
    .960) and KSDD2 (.981), EfficientAD-S on VisA (nelson1425 README 97.5)."""
    pixel_roc = {"orthoad_pixel_roc": "official OrthoAD SEG AUROC"}
    for fold, value in enumerate((0.95, 0.96, 0.97)):   # three runs in their own folders, as the README says
        results.write_results(str(tmp_path / f"fold{fold}"), "OrthoAD", "kolektor", {"orthoad_pixel_roc": value},
                              pixel_roc, {"fold": fold, "k": 100}, dataset="kolektor")
    results.write_results(str(tmp_path / "ksdd2"), "OrthoAD", "kolektor2", {"orthoad_pixel_roc": 0.98}, pixel_roc,
                          {"fold": None}, dataset="kolektor2")
    results.write_results(str(tmp_path / "visa"), "EfficientAD", "candle", {"image_auroc": 0.99},
                          {"image_auroc": "x"}, {}, dataset="visa")
    out = subprocess.run([sys.executable, "scripts/make_table.py", str(tmp_path)], cwd=REPO_ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "### OrthoAD on kolektor (k 100)" in text
    assert "| kolektor/fold0 | 95.0 | 95.3 | -0.3 |" in text
    assert "| kolektor/fold1 | 96.0 | 95.1 | +0.9 |" in text
    assert "| kolektor/fold2 | 97.0 | 97.6 | -0.6 |" in text
    assert "| **mean (3)** | 96.0 | 96.0 | +0.0 |" in text          # the README's mean over the three folds
    assert "| kolektor2 | 98.0 | 98.1 | -0.1 |" in text
    assert "- paper numbers: jnhwkim/orthoad README" in text
    assert "| candle | 99.0 | – | – |" in text                     # VisA: the paper gives the mean only
    assert "| **mean (1)** | 99.0 | 97.5 | +1.5 |" in text
    assert "nelson1425/EfficientAD README" in text
    # with --all_classes every fold is a row, "not run" where no results exist
    out = subprocess.run([sys.executable, "scripts/make_table.py", str(tmp_path / "fold1"), "--all_classes"],
                         cwd=REPO_ROOT, capture_output=True, text=True)
    assert "| kolektor/fold0 | not run | 95.3 | – |" in out.stdout and "| kolektor/fold1 | 96.0 |" in out.stdout


def test_make_table_prints_the_one_class_paper_numbers(tmp_path):
    """The one-class sets: KDAD on Retinal-OCT per class (NORMAL, MKD 97.0), RD4AD's CIFAR-10 (86.5) and
    Fashion-MNIST (95.0) means; the runs name their classes as the readers do (NORMAL, T-shirt_top, cat)."""
    detection = {"kdad_detection_auroc": "official detection_test"}
    results.write_results(str(tmp_path / "kdad"), "KDAD", "NORMAL", {"kdad_detection_auroc": 0.9512}, detection,
                          {}, dataset="retina")
    for dataset, cls, value in (("fashionmnist", "T-shirt_top", 0.93), ("fashionmnist", "Trouser", 0.99),
                                ("cifar10", "cat", 0.80)):
        results.write_results(str(tmp_path / dataset), "RD4AD", cls, {"image_auroc": value}, {"image_auroc": "x"},
                              {}, dataset=dataset)
    out = subprocess.run([sys.executable, "scripts/make_table.py", str(tmp_path)], cwd=REPO_ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "| NORMAL | 95.1 | 97.0 | -1.9 |" in text
    assert "FraqMasq/RKD_AD" in text
    assert "| T-shirt_top | 93.0 | – | – |" in text          # the mean only: no per-class paper value
    assert "| **mean (2)** | 96.0 | 95.0 | +1.0 |" in text
    assert "| **mean (1)** | 80.0 | 86.5 | -6.5 |" in text
    assert "hq-deng/RD4AD#15" in text


def test_paper_numbers_of_digit_classes_are_keyed_as_the_readers_name_them(tmp_path):
    """MNIST's classes are "0".."9" in the readers; YAML reads ``{3: 99.1}`` with an int key."""
    path = tmp_path / "paper_results_mnist.yaml"
    path.write_text("method: KDAD\ndataset: mnist\nsource: x\nmetrics:\n  image_auroc:\n    values: {3: 99.1}\n")
    assert report.load_paper(str(path))["metrics"]["image_auroc"]["values"] == {"3": 99.1}


def test_paper_results_files_name_their_source_and_dataset():
    import glob

    for path in glob.glob(os.path.join(REPO_ROOT, "*-paddle", "paper_results*.yaml")):
        paper = report.load_paper(path)
        assert paper["source"] and paper["methods"] and paper["metrics"], path
        suffix = os.path.basename(path)[len("paper_results"):-len(".yaml")]
        assert suffix == "" and paper["dataset"] == "mvtec" or suffix.lstrip("_").startswith(paper["dataset"]), path


# -- post-processing ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [256, 33, 9])
def test_gaussian_blur_layer_equals_scipy(size):
    maps = np.random.default_rng(size).random((2, size, size)).astype(np.float32) * 3
    expected = np.stack([ndimage.gaussian_filter(m.astype(np.float64), sigma=4) for m in maps])
    np.testing.assert_allclose(gaussian_smooth(maps), expected, rtol=0, atol=1e-12)
    out = GaussianBlur(size, sigma=4)(paddle.to_tensor(maps[:, None])).numpy()[:, 0]
    np.testing.assert_allclose(out, expected, rtol=0, atol=3e-6)


def test_upsample_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).random((2, 3, 8, 8)).astype(np.float32)
    for align in (True, False):
        ours = upsample(paddle.to_tensor(x), 32, align_corners=align).numpy()
        ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=32, mode="bilinear",
                                              align_corners=align).numpy()
        np.testing.assert_allclose(ours, ref, atol=1e-6)
    ours = upsample(paddle.to_tensor(x), 32, mode="nearest").numpy()
    np.testing.assert_array_equal(ours, torch.nn.functional.interpolate(torch.from_numpy(x), scale_factor=4).numpy())
    with pytest.raises(ValueError):
        upsample(paddle.to_tensor(x), 32)


@pytest.mark.parametrize("in_size,out_size", [((8, 6), (64, 40)), ((16, 16), (16, 16)), ((20, 30), (7, 9))])
def test_matrix_resize_matches_torch_interpolate(in_size, out_size):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).random((2, 3) + in_size).astype(np.float32)
    for mode, align in (("bilinear", True), ("bilinear", False), ("nearest", None)):
        ours = MatrixResize(in_size, out_size, mode, align)(paddle.to_tensor(x)).numpy()
        kwargs = {} if mode == "nearest" else {"align_corners": align}
        ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=out_size, mode=mode, **kwargs).numpy()
        np.testing.assert_allclose(ours, ref, atol=2e-6, err_msg=f"{mode} align_corners={align}")


# -- pictures -----------------------------------------------------------------------------------------------
def test_save_prediction_pictures(tmp_path):
    image = np.full((32, 32, 3), 128, np.uint8)
    amap = np.zeros((32, 32))
    amap[4:10, 4:10] = 5.0
    gt = np.zeros((32, 32), bool)
    gt[5:12, 5:12] = True
    record = visualize.save_prediction(str(tmp_path), "scratch/000", image, amap, score=5.0, image_threshold=2.0,
                                       pixel_threshold=1.0, gt_mask=gt)
    assert record["is_anomalous"] and record["defect_fraction"] == pytest.approx(36 / 1024)
    mask = np.asarray(Image.open(record["pictures"]["mask"]))
    np.testing.assert_array_equal(mask > 0, amap >= 1.0)
    contours = np.asarray(Image.open(record["pictures"]["contours"]))
    assert (contours == visualize.GT_COLOR).all(-1).any() and (contours == visualize.PRED_COLOR).all(-1).any()
    heat = np.asarray(Image.open(record["pictures"]["heatmap"]))
    assert heat.shape == (32, 32, 3) and not (heat[5, 5] == heat[20, 20]).all()


def test_predict_images_names_by_relative_path_and_replaces_the_jsonl(tmp_path):
    for folder in ("good", "crack"):
        (tmp_path / "in" / folder).mkdir(parents=True)
        Image.fromarray(np.full((20, 20, 3), 100 if folder == "good" else 200, np.uint8)).save(
            tmp_path / "in" / folder / "000.png")
    seen_batches = []

    def run_batch(x):  # map = mean intensity everywhere, score = its max
        seen_batches.append(x.shape)
        maps = x.mean(axis=1, keepdims=True)
        return maps, maps.reshape(len(x), -1).max(axis=1)

    out = tmp_path / "out"
    for _ in range(2):
        records = predict.predict_images(str(tmp_path / "in"), run_batch, Preprocess(resize=16, normalize=False),
                                         0.5, 0.5, str(out), batch_size=2, quiet=True)
    assert seen_batches == [(2, 3, 16, 16)] * 2
    assert [r["image"] for r in records] == [str(tmp_path / "in" / f / "000.png") for f in ("crack", "good")]
    assert [r["is_anomalous"] for r in records] == [True, False]  # 200/255 >= 0.5 > 100/255
    assert (out / "crack" / "000_mask.png").is_file() and (out / "good" / "000_mask.png").is_file()
    assert len((out / predict.PREDICTIONS).read_text().splitlines()) == 2


# -- export and Paddle Inference ----------------------------------------------------------------------------
class _SmoothedConv(paddle.nn.Layer):
    """conv -> x2 bilinear upsampling -> Gaussian blur -> max: the shape of every method's exported scoring."""

    def __init__(self):
        super().__init__()
        self.conv = paddle.nn.Conv2D(3, 1, 3, padding=1)
        self.resize = MatrixResize(16, 32, "bilinear", align_corners=False)
        self.blur = GaussianBlur(32)

    def forward(self, x):
        amap = self.blur(self.resize(self.conv(x)))
        return amap, paddle.amax(amap, axis=[1, 2, 3])


def test_export_and_predictor_agree_with_dygraph(tmp_path, capsys, monkeypatch):
    paddle.seed(0)
    layer = _SmoothedConv()
    spec = [paddle.static.InputSpec([None, 3, 16, 16], "float32", "image")]
    model_file = export_static(layer, spec, str(tmp_path / "inference"))
    assert model_file.endswith((".json", ".pdmodel"))
    assert find_model_files(str(tmp_path)) == (model_file, str(tmp_path / "inference.pdiparams"))
    x = np.random.default_rng(0).random((3, 3, 16, 16)).astype(np.float32)
    for mkldnn in (True, False):
        predictor = Predictor(str(tmp_path), threads=2, use_mkldnn=mkldnn)
        amap, score = predictor.run(x)
        ref_map, ref_score = layer(paddle.to_tensor(x))
        np.testing.assert_allclose(amap, ref_map.numpy(), atol=1e-5)
        np.testing.assert_allclose(score, ref_score.numpy(), atol=1e-5)
    monkeypatch.setitem(sys.modules, "auto_log", None)  # the built-in timer, whether or not AutoLog is installed
    timer = BenchmarkTimer("demo", 3, [3, 16, 16], predictor, warmup=1)
    for _ in range(3):
        timer.start()
        timer.stamp()
        predictor.run(x)
        timer.stamp()
        timer.end(stamp=True)
    fields = timer.report()
    assert fields["data_num"] == 6 and fields["inference_time(ms)"] > 0  # 2 timed batches of 3 after the warm-up
    assert fields["enable_mkldnn"] is False and fields["cpu_math_library_num_threads"] == 2
    assert "inference_time(ms)" in capsys.readouterr().out


class _InputGradient(paddle.nn.Layer):
    """A graph holding a gradient operator (conv2d_grad), which paddle2onnx cannot convert."""

    def __init__(self):
        super().__init__()
        self.conv = paddle.nn.Conv2D(3, 4, 3, padding=1)

    def forward(self, x):
        x.stop_gradient = False
        (gradient,) = paddle.grad([paddle.sum(paddle.square(self.conv(x)))], [x])
        return gradient


def test_onnx_conversion_failure_is_one_error_line(tmp_path):
    pytest.importorskip("paddle2onnx")
    from common.deploy.backends import export_onnx

    paddle.seed(0)
    export_static(_InputGradient(), [paddle.static.InputSpec([None, 3, 8, 8], "float32", "x")],
                  str(tmp_path / "inference"))
    with pytest.raises(UserError, match="paddle2onnx cannot convert the graph"):
        export_onnx(*find_model_files(str(tmp_path)), str(tmp_path))
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".onnx")]  # nothing half-written


def test_find_model_files_accepts_paddle2_names(tmp_path):
    (tmp_path / "inference.pdmodel").write_bytes(b"")
    (tmp_path / "inference.pdiparams").write_bytes(b"")
    assert find_model_files(str(tmp_path))[0].endswith("inference.pdmodel")
    assert find_model_files(str(tmp_path / "inference.pdmodel"))[1].endswith("inference.pdiparams")
    with pytest.raises(UserError, match="run export_model.py first"):
        find_model_files(str(tmp_path / "missing"))
    with pytest.raises(UserError, match="infer_config.json not found"):
        load_infer_config(str(tmp_path))
    save_infer_config(str(tmp_path), {"thresholds": {"image": np.float64(1.5)}, "size": 64})
    assert load_infer_config(str(tmp_path)) == {"thresholds": {"image": 1.5}, "size": 64}


# -- CLI contract and per-class loops -----------------------------------------------------------------------
def test_shared_args_accept_source_repo_spellings():
    parser = add_shared_args(argparse.ArgumentParser())
    args = parser.parse_args(["--category", "wood", "--data_path", "/d", "--save_dir", "/o", "--use_gpu", "False"])
    assert (args.cls, args.data_dir, args.output_dir, args.device) == ("wood", "/d", "/o", "cpu")
    args = parser.parse_args(["--normal_class", "pill", "--dataset_root", "/x", "--use_gpu", "True"])
    assert (args.cls, args.data_dir, args.output_dir, args.device) == ("pill", "/x", "output", "gpu_if_available")
    assert parser.parse_args([]).data_dir == "mvtec"  # where the earlier ports' READMEs unpack MVTec AD


def test_run_per_class_survives_a_failing_class(capsys):
    def run_one(cls):
        if cls == "b":
            raise UserError("broken data")
        return cls.upper()

    with pytest.raises(UserError, match="failed for 1 of 3 classes: b: broken data"):
        run_per_class(["a", "b", "c"], run_one)
    assert "[c] run done" in capsys.readouterr().out


def test_run_all_script_keeps_going(tmp_path):
    method = tmp_path / "Demo-paddle"
    method.mkdir()
    (method / "main.py").write_text(textwrap.dedent(f"""
        import argparse, sys
        sys.path.insert(0, {REPO_ROOT!r})
        from common.evaluation.results import write_results
        p = argparse.ArgumentParser()
        for name in ("--mode", "--cls", "--data_dir", "--output_dir"):
            p.add_argument(name)
        a = p.parse_args()
        if a.cls == "cable":
            sys.exit("error: cable is broken")
        if a.mode == "eval":
            write_results(a.output_dir + "/results", "Demo", a.cls, {{"image_auroc": 0.9}}, {{}}, {{}})
    """))
    env = dict(os.environ, OUTPUT_DIR=str(tmp_path / "out"), DATA_DIR=str(tmp_path), LOG_DIR=str(tmp_path / "logs"))
    out = subprocess.run(["bash", "scripts/run_all.sh", str(method), "bottle", "cable", "wood"], cwd=REPO_ROOT,
                         env=env, capture_output=True, text=True)
    assert out.returncode == 1
    assert "[cable] train FAILED: error: cable is broken" in out.stderr
    assert "| bottle | 90.0 |" in out.stdout and "| wood | 90.0 |" in out.stdout
    assert os.path.isfile(tmp_path / "logs" / "wood_eval.log")
    assert "cable is broken" in open(tmp_path / "logs" / "cable_train.log").read()
    bad = subprocess.run(["bash", "scripts/run_all.sh", "nomethod"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown method" in bad.stderr


def test_matrix_resize_of_a_1x1_map_runs_under_onednn(tmp_path):
    """Paddle Inference 3.3 with oneDNN corrupts a matmul with inner dimension 1; MatrixResize broadcasts instead."""

    class Upsample(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.resize = MatrixResize(1, 3, "bilinear", align_corners=False)
            self.scale = self.create_parameter([1], default_initializer=paddle.nn.initializer.Constant(2.0))

        def forward(self, x):
            return self.resize(x * self.scale)

    spec = [paddle.static.InputSpec([None, 4, 1, 1], "float32", "x")]
    export_static(Upsample(), spec, str(tmp_path / "inference"))
    x = np.random.default_rng(0).standard_normal((2, 4, 1, 1)).astype(np.float32)
    predictor = Predictor(str(tmp_path), threads=2, use_mkldnn=True)
    for _ in range(4):  # the corruption changed from run to run
        np.testing.assert_allclose(predictor.run(x)[0], np.broadcast_to(2 * x, (2, 4, 3, 3)), rtol=1e-6)


def test_resize_to_image_equals_torch_interpolate():
    torch = pytest.importorskip("torch")
    from common.networks.postprocess import resize_to_image

    amap = np.random.default_rng(2).random((64, 64)).astype(np.float32)
    ours = resize_to_image(amap, (300, 420))  # (width, height)
    reference = torch.nn.functional.interpolate(torch.from_numpy(amap)[None, None], size=(420, 300),
                                                mode="bilinear", align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(ours, reference, atol=1e-5)


class _TwoTaps(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.first = paddle.nn.Conv2D(3, 8, 3, padding=1)
        self.second = paddle.nn.Conv2D(8, 4, 3, stride=2, padding=1)

    def forward(self, x):
        y = paddle.nn.functional.relu(self.first(x))
        return [y, self.second(y)]


def test_frozen_forward_runs_the_network_in_paddle_inference(capsys, monkeypatch):
    from common.training import frozen

    paddle.seed(0)
    layer = _TwoTaps()
    layer.eval()
    x = paddle.to_tensor(np.random.default_rng(3).standard_normal((5, 3, 12, 12)).astype(np.float32))
    fast = frozen.FrozenForward(layer, (3, 12, 12), threads=2)
    assert fast.predictor is not None
    got = fast(x)
    with paddle.no_grad():
        want = layer(x)
    assert isinstance(got, list) and len(got) == 2 and all(g.stop_gradient for g in got)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-5, atol=1e-5 * float(w.abs().max()))
    np.testing.assert_array_equal(fast(x)[1].numpy(), got[1].numpy())  # deterministic
    # the network itself is untouched: still a dygraph layer that records gradients
    x.stop_gradient = False
    assert not layer(x)[1].stop_gradient
    single = frozen.FrozenForward(layer.first, (3, 12, 12), threads=2)
    assert isinstance(single(x), paddle.Tensor)
    # a copy that disagrees with the network is dropped with a note, and the dygraph network runs instead
    monkeypatch.setattr(frozen, "AGREEMENT_RTOL", -1.0)
    fallback = frozen.FrozenForward(layer, (3, 12, 12), threads=2)
    assert fallback.predictor is None and "running it in dygraph" in capsys.readouterr().out
    np.testing.assert_array_equal(fallback(x)[1].numpy(), want[1].numpy())


def test_frozen_networks_with_the_same_weights_share_one_predictor(monkeypatch):
    """The next class of a per-class loop freezes a new teacher object with the same weights: it gets the predictor
    built for the first (a new predictor per class kept oneDNN state of every earlier class, issue 23); other
    weights, another input shape or other threads get their own, and the shared one serves the new network's
    outputs."""
    from common.training import frozen

    monkeypatch.setattr(frozen, "_PREDICTORS", collections.OrderedDict())

    def network(seed):
        paddle.seed(seed)
        layer = _TwoTaps()
        layer.eval()
        return layer

    first = frozen.FrozenForward(network(0), (3, 12, 12), threads=2)
    same_weights = network(0)
    second = frozen.FrozenForward(same_weights, (3, 12, 12), threads=2)
    assert second.predictor is first.predictor
    x = paddle.to_tensor(np.random.default_rng(4).standard_normal((2, 3, 12, 12)).astype(np.float32))
    with paddle.no_grad():
        want = same_weights(x)[1].numpy()
    np.testing.assert_allclose(second(x)[1].numpy(), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    other_weights = frozen.FrozenForward(network(1), (3, 12, 12), threads=2)
    assert other_weights.predictor is not first.predictor
    assert frozen.FrozenForward(network(0), (3, 16, 16), threads=2).predictor is not first.predictor
    assert frozen.FrozenForward(network(0), (3, 12, 12), threads=1).predictor is not first.predictor
    assert len(frozen._PREDICTORS) == frozen.SHARED_PREDICTORS  # a few kept, the least recently used dropped


class _ConvBlock(paddle.nn.Layer):
    """conv -> BatchNorm (batch statistics) -> ReLU -> strided conv with bias, and an opted-in convolution layer."""

    def __init__(self):
        super().__init__()
        self.conv1 = paddle.nn.Conv2D(3, 8, 3, padding=1, bias_attr=False)
        self.bn = paddle.nn.BatchNorm2D(8)
        self.conv2 = paddle.nn.Conv2D(8, 16, 3, stride=2, padding=1)
        self.up = _OptedIn(16, 4)

    def forward(self, x):
        return self.up(self.conv2(paddle.nn.functional.relu(self.bn(self.conv1(x)))))


class _OptedIn(paddle.nn.Layer):
    """A 1x1 convolution to 4x the channels + pixel_shuffle, declared a convolution (as RD4AD's Upsample2x2)."""

    onednn_convolution = True

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.weight = self.create_parameter([out_channels * 4, in_channels, 1, 1])

    def forward(self, x):
        return paddle.nn.functional.pixel_shuffle(paddle.nn.functional.conv2d(x, self.weight), 2)


def test_onednn_convolutions_give_the_dygraph_outputs_and_gradients(monkeypatch):
    """Inside common.training.onednn.onednn_convolutions each convolution runs as its own oneDNN program: the outputs and
    every parameter's and the input's gradient equal plain dygraph (float32 rounding), BatchNorm's running
    statistics update the same way, and afterwards the layers and the oneDNN flag are as before."""
    from common.training import onednn as training

    paddle.seed(0)
    net = _ConvBlock()
    net.train()
    x_np = np.random.default_rng(5).standard_normal((4, 3, 16, 16)).astype(np.float32)
    start = {k: v.numpy().copy() for k, v in net.state_dict().items()}

    def run():
        net.set_state_dict({k: paddle.to_tensor(v) for k, v in start.items()})
        net.clear_gradients()
        x = paddle.to_tensor(x_np, stop_gradient=False)
        out = net(x)
        (out * out).mean().backward()
        grads = {n: p.grad.numpy().copy() for n, p in net.named_parameters() if p.grad is not None}
        assert set(grads) == {n for n, p in net.named_parameters() if not p.stop_gradient}, sorted(grads)
        return out.numpy(), grads, x.grad.numpy(), net.bn._mean.numpy().copy()

    plain = run()
    made = []
    original = training._program_layer
    monkeypatch.setattr(training, "_PROGRAMS", {})  # none compiled yet in this process
    monkeypatch.setattr(training, "_program_layer",
                        lambda layer_class, attributes: made.append(layer_class.__name__) or original(layer_class,
                                                                                                      attributes))
    with training.onednn_convolutions(net):
        assert paddle.get_flags("FLAGS_use_mkldnn")["FLAGS_use_mkldnn"] is True
        fast = run()
        again = run()  # the programs are built once and reused
    assert sorted(made) == ["Conv2D", "Conv2D", "_OptedIn"]
    assert paddle.get_flags("FLAGS_use_mkldnn")["FLAGS_use_mkldnn"] is False
    assert all("forward" not in vars(layer) for layer in net.sublayers())  # plain layers again
    np.testing.assert_allclose(fast[0], plain[0], rtol=1e-5, atol=1e-5 * np.abs(plain[0]).max())
    for name, grad in plain[1].items():
        np.testing.assert_allclose(fast[1][name], grad, rtol=1e-4, atol=1e-5 * np.abs(grad).max(), err_msg=name)
    np.testing.assert_allclose(fast[2], plain[2], rtol=1e-4, atol=1e-5 * np.abs(plain[2]).max())
    np.testing.assert_allclose(fast[3], plain[3], rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(again[0], fast[0])  # deterministic
    np.testing.assert_array_equal(again[1]["conv1.weight"], fast[1]["conv1.weight"])
    np.testing.assert_array_equal(net(paddle.to_tensor(x_np)).numpy().shape, plain[0].shape)  # dygraph again


def test_keep_freed_memory_reuses_large_blocks():
    """common.core.runtime.keep_freed_memory: a freed 64 MB block is reused, not unmapped and page-faulted in again
    (glibc's default maps every block above 32 MB fresh: 16,384 page faults for 64 MB)."""
    import resource

    from common.core import runtime

    if not runtime.keep_freed_memory():
        pytest.skip("no glibc mallopt on this platform")

    def page_faults_of_a_64mb_block():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = np.ones(16 * 2 ** 20, np.float32)  # written: every page touched
        del block
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    page_faults_of_a_64mb_block()  # the heap grows once
    assert page_faults_of_a_64mb_block() < 1000


def test_onednn_convolution_programs_are_shared_and_do_not_keep_the_model_alive(monkeypatch):
    """Models of one architecture share the compiled convolution programs: a second model (the next class of a
    per-class loop) compiles none and builds no static program, and the first model is freed. Paddle 3.3.1 never
    frees a program that ran a backward pass, so one program per layer kept ~0.55 GB per class (issue 23)."""
    import gc
    import traceback
    import weakref

    from common.training import onednn as training

    monkeypatch.setattr(training, "_PROGRAMS", {})

    def train_one_step(seed):
        paddle.seed(seed)
        net = _ConvBlock()
        net.train()
        with training.onednn_convolutions(net):
            net(paddle.rand([2, 3, 16, 16])).mean().backward()
        return weakref.ref(net.conv1)

    def static_programs():  # every op of a static program keeps the Python stack that created it
        gc.collect()
        return sum(isinstance(o, traceback.StackSummary) for o in gc.get_objects())

    first = train_one_step(0)
    programs, stacks = training.compiled_programs(), static_programs()
    assert programs == 3 and first() is None
    second = train_one_step(1)
    assert training.compiled_programs() == programs and static_programs() == stacks and second() is None
    # another configuration (wider first convolution) compiles its own program
    paddle.seed(2)
    net = _ConvBlock()
    net.conv1 = paddle.nn.Conv2D(3, 8, 5, padding=2)
    with training.onednn_convolutions(net):
        net(paddle.rand([2, 3, 16, 16])).mean().backward()
    assert training.compiled_programs() == programs + 1


# -- device ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cuda, gpus, requested, expected", [
    (True, 1, None, "gpu"),          # a CUDA build that sees a GPU runs there without --device gpu
    (True, 2, "auto", "gpu"),
    (True, 0, None, "cpu"),          # a CUDA build without a visible GPU
    (False, 0, None, "cpu"),         # the CPU build
    (True, 1, "cpu", "cpu"),         # an explicit choice stands
    (True, 2, "gpu:1", "gpu:1"),
    (True, 1, "gpu_if_available", "gpu"),
    (False, 0, "gpu_if_available", "cpu"),
    (True, 0, "gpu_if_available", "cpu"),
])
def test_device_default_follows_paddles(monkeypatch, capsys, cuda, gpus, requested, expected):
    from common.core.runtime import resolve_device

    monkeypatch.setattr(paddle.device, "is_compiled_with_cuda", lambda: cuda)
    monkeypatch.setattr(paddle.device.cuda, "device_count", lambda: gpus)
    assert resolve_device(requested) == expected
    assert ("running on the CPU" in capsys.readouterr().out) == (requested == "gpu_if_available" and expected == "cpu")


def test_device_default_is_paddles_own_and_a_gpu_request_on_the_cpu_build_is_one_line(monkeypatch):
    from common.cli.args import add_runtime_args
    from common.core.runtime import device_line, resolve_device

    assert add_runtime_args(argparse.ArgumentParser()).parse_args([]).device is None  # no fixed default
    fresh = subprocess.run([sys.executable, "-c", "import paddle; from common.core.runtime import default_device; "
                            "print(paddle.get_device().split(':')[0], default_device())"],
                           capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")))
    paddles, ours = fresh.stdout.split()
    assert ours == paddles  # what Paddle picks in a fresh process when nobody sets a device
    monkeypatch.setattr(paddle.device, "is_compiled_with_cuda", lambda: False)
    with pytest.raises(UserError, match="no CUDA support"):
        resolve_device("gpu")
    assert device_line("cpu", 2) == "device: cpu (2 threads)" and device_line("gpu:0", 2) == "device: gpu:0"


def test_loco_table_shows_the_paper_limit_and_the_papers_loco_auroc(tmp_path):
    """A LOCO results file has AU-sPRO at five limits: the table shows the paper's 0.05 (all five with
    --all_metrics), and EfficientAD-S's LOCO image AUROC (nelson1425 README 'Official Paper' 90.0) stands beside
    image_auroc_mean, the LOCO evaluator's mean of logical and structural."""
    metrics = {"image_auroc": 0.8, "image_auroc_mean": 0.91}
    metrics.update({f"au_spro_{s}@{limit}": 0.5 for s in ("logical", "mean") for limit in (0.01, 0.05, 1.0)})
    protocols = {name: f"protocol of {name}" for name in metrics}
    results.write_results(str(tmp_path), "EfficientAD", "pushpins", metrics, protocols, {}, dataset="mvtec_loco")
    records = results.load_results(str(tmp_path))
    paper = report.find_paper("EfficientAD", REPO_ROOT, "mvtec_loco")
    table = report.markdown_table(records, paper).splitlines()
    assert table[0] == ("| class | image_auroc | image_auroc_mean | paper | Δ | au_spro_logical@0.05 | "
                        "au_spro_mean@0.05 |")
    assert table[-1] == "| **mean (1)** | 80.0 | 91.0 | 90.0 | +1.0 | 50.0 | 50.0 |"
    legend = report.protocol_legend(records, paper)
    assert "au_spro_mean@0.05" in legend and "@0.01" not in legend
    every = report.markdown_table(records, paper, all_metrics=True).splitlines()[0]
    assert every.count("au_spro_") == 6


def test_infer_with_a_cpu_backend_stays_on_the_cpu_where_paddle_would_take_a_gpu(monkeypatch, capsys, tmp_path):
    from common.cli.infer import run as run_infer

    monkeypatch.setattr(paddle.device, "is_compiled_with_cuda", lambda: True)
    monkeypatch.setattr(paddle.device.cuda, "device_count", lambda: 1)
    with pytest.raises(UserError, match="no exported model"):  # the device is chosen and named before the model
        run_infer(["--model_dir", str(tmp_path / "missing"), "--backend", "onnxruntime", "--threads", "2"])
    assert capsys.readouterr().out.splitlines()[0] == "device: cpu (2 threads)"
