"""The shared method contract, checked the same way for every method folder: layout, configuration layering,
options offered per command, model-describing options, and train -> eval -> predict -> export -> infer end to end
on synthetic data with the same file schemas and console lines."""
import dataclasses
import importlib
import importlib.util
import json
import os

import numpy as np
import paddle
import pytest

from common.core import config as cfg
from method_harness import (
    ENTRY_SCRIPTS,
    METHODS,
    PACKAGE_MODULES,
    command,
    export,
    folder,
    infer,
    method_package,
    tiny_model_option,
    train_tiny,
)

PACKAGES = sorted(METHODS)
THRESHOLD_KEYS = {"image_threshold", "pixel_threshold", "image_quantile", "pixel_quantile", "num_images", "held_out",
                  "source", "calibration_images"}
RESULT_KEYS = {"schema", "method", "dataset", "class", "metrics", "protocols", "threshold", "config", "notes", "seconds",
               "created", "python", "machine", "cpu_count", "git_commit", "paddle_version"}
RECORD_KEYS = {"image", "score", "threshold", "is_anomalous", "pixel_threshold", "defect_fraction", "pictures"}


def module(package, name):
    folder(package)
    return importlib.import_module(f"{package}.{name}")


@pytest.mark.parametrize("package", PACKAGES)
def test_every_method_folder_has_the_same_layout(package):
    root = folder(package)
    for name in ENTRY_SCRIPTS + ("benchmark.py", "README.md", "paper_results.yaml", "configs/default.yaml",
                                 "configs/tiny.yaml", "test_tipc/test_train_inference_python.sh"):
        assert os.path.isfile(os.path.join(root, name)), name
    for name in PACKAGE_MODULES:
        assert os.path.isfile(os.path.join(root, package, name + ".py")), name
    for script in ENTRY_SCRIPTS:  # thin: the shared command line does the work
        with open(os.path.join(root, script), encoding="utf-8") as handle:
            code = [line for line in handle if line.strip() and not line.startswith(('"""', "#"))]
        assert len(code) <= 6, script


# The method contract: every method package has these modules, names and signatures (common/cli/commands.py).
CONTRACT = {
    "config": {"Config": None, "DEFAULT_CONFIG": None},
    "data": {"preprocess": "(config)", "training_split": "(config, data_dir, cls)", "dataset": "(samples, config)",
             "test_dataset": "(config, data_dir, cls)"},
    "trainer": {"train": "(config, cls, data_dir, output_dir, resume=None)"},
    "checkpoint": {"CHECKPOINT": None, "exists": "(class_dir)", "save": "(path, detector, config, meta)",
                   "load": "(path, backbone_weights=None)"},
    "evaluate": {"PROTOCOLS": None, "test_metrics": "(detector, config, dataset)"},
    "detector": {}, "model": {}, "loss": {},
}
SUMMARY_KEYS = {"checkpoint", "final_loss", "seconds", "status"}


def detector_class(package):
    """The one ``*Detector`` layer class a method's ``detector`` module defines."""
    detector_module = module(package, "detector")
    classes = [c for name, c in vars(detector_module).items() if name.endswith("Detector") and isinstance(c, type)
               and c.__module__ == detector_module.__name__]
    assert len(classes) == 1, classes
    return classes[0]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_method_package_has_the_same_contract(package):
    """Signatures, not only file names: a fifth method whose save, load, train or metric step drifts fails here."""
    import inspect

    methods = method_package(package)
    for name, members in CONTRACT.items():
        assert getattr(methods, name) is module(package, name), name  # the entry scripts reach it from the package
        for member, signature in members.items():
            value = getattr(module(package, name), member)
            if signature is not None:
                assert str(inspect.signature(value)) == signature, f"{package}.{name}.{member}"
    config = module(package, "config")
    assert dataclasses.is_dataclass(config.Config) and isinstance(config.Config().method_name, str)
    assert os.path.isfile(config.DEFAULT_CONFIG)
    fields = {f.name for f in dataclasses.fields(config.Config)}
    assert not fields & {"num_epochs", "calibration_fraction"}  # one name per idea: epochs, validation_fraction
    assert isinstance(module(package, "checkpoint").CHECKPOINT, str)
    assert isinstance(module(package, "evaluate").PROTOCOLS, dict)
    detector = detector_class(package)
    assert issubclass(detector, paddle.nn.Layer) and isinstance(detector.original_resolution, bool)
    parameters = list(inspect.signature(detector.forward).parameters.values())
    assert [p.name for p in parameters[:2]] == ["self", "x"]  # images in; anything else optional
    assert all(p.default is not inspect.Parameter.empty for p in parameters[2:])


def test_entry_scripts_import_their_method_package():
    """A reader follows main.py into the method package (no method looked up by a string)."""
    for package in PACKAGES:
        with open(os.path.join(folder(package), "main.py"), encoding="utf-8") as handle:
            code = handle.read()
        assert f"import {package}\n" in code and f"main({package})" in code


@pytest.mark.parametrize("package", PACKAGES)
def test_default_yaml_restates_the_dataclass_defaults(package):
    config = module(package, "config")
    values = cfg.load_yaml(config.DEFAULT_CONFIG)
    fields = {f.name: f.default for f in dataclasses.fields(config.Config)}
    assert values == fields
    assert cfg.build_config(config.Config, config.DEFAULT_CONFIG) == config.Config()


def test_config_layering_and_type_errors(tmp_path, synthetic_root):
    config = module("rd4ad", "config")
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 7\nlr: 1\n")
    built = cfg.build_config(config.Config, str(path), {"epochs": 9, "batch_size": None})
    assert (built.epochs, built.lr, built.batch_size) == (9, 1.0, 16)  # command line > file > defaults
    path.write_text("epoch: 7\n")
    with pytest.raises(Exception, match="unknown option.*epoch"):
        cfg.build_config(config.Config, str(path))
    path.write_text("epochs: many\n")
    with pytest.raises(Exception, match="epochs must be int"):
        cfg.build_config(config.Config, str(path))


@pytest.mark.parametrize("package,mode,flag", [
    ("rd4ad", "eval", "--lr"), ("rd4ad", "predict", "--epochs"), ("rd4ad", "eval", "--resume"),
    ("orthoad", "eval", "--eps"), ("orthoad", "predict", "--train_split"), ("orthoad", "eval", "--input"),
])
def test_options_a_command_does_not_use_are_not_offered(package, mode, flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        command(package, mode, flag, "1")
    assert exit_info.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------
# End to end, the same for every method
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=PACKAGES)
def trained(request, synthetic_root, tmp_path_factory):
    """bottle trained with the method's tiny config (carpet left untrained)."""
    package = request.param
    output_dir = str(tmp_path_factory.mktemp(f"{package}_out"))
    train_tiny(package, synthetic_root, output_dir)
    return package, synthetic_root, output_dir


def _read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _read_jsonl(path):
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def test_training_writes_a_model_and_thresholds_of_one_schema(trained):
    package, _, output_dir = trained
    class_dir = os.path.join(output_dir, "bottle")
    assert module(package, "checkpoint").exists(class_dir)
    thresholds = _read_json(os.path.join(class_dir, "thresholds.json"))
    assert set(thresholds) == THRESHOLD_KEYS
    assert isinstance(thresholds["held_out"], bool) and thresholds["num_images"] == len(
        thresholds["calibration_images"]) > 0
    assert thresholds["pixel_threshold"] <= thresholds["image_threshold"]
    assert not [name for name in os.listdir(class_dir) if name.startswith(".tmp-")]  # atomic writes left nothing


def test_load_save_test_metrics_and_train_return_one_shape(trained, tmp_path, capsys):
    """Return values of the contract: load -> (the method's detector, its Config, thresholds); save(path, ...) writes
    a model load reads back to the same outputs; test_metrics -> TestResult over the PROTOCOLS; train -> the shared
    summary (a finished class found by --resume: status done, nothing retrained)."""
    from common.evaluation.evaluate import TestResult

    package, data_dir, output_dir = trained
    checkpoint = module(package, "checkpoint")
    detector, config, thresholds = checkpoint.load(os.path.join(output_dir, "bottle"))
    assert isinstance(detector, detector_class(package)) and isinstance(config, module(package, "config").Config)
    assert isinstance(thresholds, dict) and not detector.training
    saved = checkpoint.save(str(tmp_path / "copy"), detector, config, {"source": "a copy"})
    assert os.path.isfile(saved) and checkpoint.exists(str(tmp_path / "copy"))
    copy, copy_config, _ = checkpoint.load(str(tmp_path / "copy"))
    assert copy_config == config
    x = paddle.to_tensor(np.random.default_rng(0).standard_normal((2, 3, config.image_size, config.image_size))
                         .astype(np.float32))
    with paddle.no_grad():
        for ours, theirs in zip(detector(x), copy(x)):
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    result = module(package, "evaluate").test_metrics(detector, config,
                                                       module(package, "data").test_dataset(config, data_dir, "bottle"))
    assert isinstance(result, TestResult) and set(result.metrics) <= set(module(package, "evaluate").PROTOCOLS)
    assert len(result.scores) == len(result.maps) == 10
    summaries = train_tiny(package, data_dir, output_dir, "--resume")
    assert set(summaries["bottle"]) == SUMMARY_KEYS and summaries["bottle"]["status"] == "done"
    assert "left as they are" in capsys.readouterr().out


# options making the first logged loss that of one step (12 training images), before any update
FIRST_RECORD_IS_ONE_STEP = {"rd4ad": ("--batch_size", 16), "kdad": ("--batch_size", 16), "efficientad": ()}


@pytest.mark.parametrize("package", sorted(FIRST_RECORD_IS_ONE_STEP))
def test_frozen_networks_in_paddle_inference_give_the_plain_dygraph_losses(package, synthetic_root, tmp_path,
                                                                             monkeypatch):
    """Training runs the frozen teacher/expert through common.training.frozen (Paddle Inference, oneDNN) and the trained
    convolutions on oneDNN (common.training.onednn.onednn_convolutions); the plain dygraph path gives the same first-step
    loss (1e-5 relative; later steps drift apart at float32 rounding as any two float32 computations of a training
    run do), and the default run does use both."""
    from common.training import frozen
    from common.training import onednn as training

    made = []
    original = frozen.FrozenForward.__init__

    def recording(self, *args, **kwargs):
        original(self, *args, **kwargs)
        made.append(self.predictor is not None)

    def first_loss(output_dir):
        records = [r for r in _read_jsonl(os.path.join(output_dir, "bottle", "train_log.jsonl"))
                   if "test_metrics" not in r]
        return records[0].get("loss", records[0].get("total"))  # per epoch (RD4AD, KDAD) or per step

    programs = []
    program_layer = training._program_layer
    monkeypatch.setattr(frozen.FrozenForward, "__init__", recording)
    monkeypatch.setattr(training, "_PROGRAMS", {})  # none compiled yet: count what this training compiles
    monkeypatch.setattr(training, "_program_layer", lambda layer_class, attributes: programs.append(layer_class)
                        or program_layer(layer_class, attributes))
    train_tiny(package, synthetic_root, str(tmp_path / "fast"), *FIRST_RECORD_IS_ONE_STEP[package])
    trained_convolutions = len(programs)
    monkeypatch.setattr(frozen, "DEFAULT_BACKEND", "dygraph")
    monkeypatch.setattr(training, "ONEDNN_CONVOLUTIONS", False)
    train_tiny(package, synthetic_root, str(tmp_path / "plain"), *FIRST_RECORD_IS_ONE_STEP[package])
    assert made == [True, False]
    assert trained_convolutions > 0 and len(programs) == trained_convolutions  # oneDNN convolutions by default
    # training leaves no global oneDNN flag behind (a later to_static program with gradient ops crashed on it)
    assert paddle.get_flags("FLAGS_use_mkldnn")["FLAGS_use_mkldnn"] is False
    assert first_loss(tmp_path / "fast") == pytest.approx(first_loss(tmp_path / "plain"), rel=1e-5)


def test_eval_all_skips_untrained_classes_and_writes_one_results_schema(trained, capsys):
    package, data_dir, output_dir = trained
    results = command(package, "eval", "--cls", "all", "--data_dir", data_dir, "--output_dir", output_dir,
                      "--threads", 2)
    assert list(results) == ["bottle"]  # carpet has no model
    name = METHODS[package][1]
    record = _read_json(os.path.join(output_dir, "results", f"{name}_bottle.json"))
    assert set(record) == RESULT_KEYS and record["method"] == name
    assert list(record["metrics"])[:3] == ["image_auroc", "pixel_auroc", "au_pro"]
    assert all(0 <= v <= 1 for v in record["metrics"].values()) and set(record["metrics"]) <= set(record["protocols"])
    name_of_option, value = tiny_model_option(package)
    assert record["config"][name_of_option] == value and "calibration_images" not in record["threshold"]
    out = capsys.readouterr().out
    assert f"{name} results" in out and out.strip().splitlines()[-1].startswith("bottle")


def test_model_options_are_checked_against_the_model(trained, capsys):
    package, data_dir, output_dir = trained
    common = ["--cls", "bottle", "--data_dir", data_dir, "--output_dir", output_dir, "--threads", 2]
    name, value = tiny_model_option(package)
    command(package, "eval", *common, f"--{name}", value)  # matches the model: accepted
    with pytest.raises(SystemExit) as exit_info:
        command(package, "eval", *common, "--image_size", 128)
    assert exit_info.value.code == 2
    assert "--image_size 128 contradicts the model" in capsys.readouterr().err.strip().splitlines()[-1]
    with pytest.raises(SystemExit):
        export(package, "--cls", "bottle", "--output_dir", output_dir, "--backbone", "wide_resnet50_2")


def test_predict_export_infer_agree(trained, tmp_path, capsys):
    package, data_dir, output_dir = trained
    inputs = os.path.join(data_dir, "bottle", "test")
    predicted = command(package, "predict", "--cls", "bottle", "--output_dir", output_dir, "--input", inputs,
                        "--predict_dir", tmp_path / "predict", "--threads", 2)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "device: cpu (2 threads)"  # every command names its device first
    assert lines[1].startswith(os.path.join(inputs, "blob", "000.png") + ": score ") and "threshold" in lines[1]
    inference_dir = tmp_path / "inference"
    model_file = export(package, "--cls", "bottle", "--output_dir", output_dir, "--save_inference_dir",
                        inference_dir, "--threads", 2)
    assert model_file.endswith((".json", ".pdmodel"))
    assert "max relative difference" in capsys.readouterr().out
    inferred = infer("--model_dir", inference_dir, "--input", inputs, "--output_dir", tmp_path / "infer",
                     "--batch_size", 3, "--threads", 2, "--benchmark")
    assert len(predicted) == len(inferred) == 10  # 4 good + 3 defect types x 2
    for ours, theirs in zip(predicted, inferred):
        assert set(ours) == set(theirs) == RECORD_KEYS and ours["image"] == theirs["image"]
        assert theirs["score"] == pytest.approx(ours["score"], rel=1e-4, abs=1e-5)
        assert theirs["is_anomalous"] == ours["is_anomalous"] or abs(ours["score"] - ours["threshold"]) < 1e-4
        assert all(os.path.isfile(p) for p in theirs["pictures"].values()) and len(theirs["pictures"]) == 3
    assert _read_jsonl(tmp_path / "infer" / "predictions.jsonl") == inferred

    # the exported map equals the dygraph map on real (preprocessed) images
    from common.core.inference import Predictor
    from common.data.dataset import ImageDataset
    from common.data.readers.mvtec import test_samples

    detector, config, _ = module(package, "checkpoint").load(os.path.join(output_dir, "bottle"))
    dataset = ImageDataset(test_samples(data_dir, "bottle"), module(package, "data").preprocess(config))
    images = np.stack([dataset[i][0] for i in range(4)])
    with paddle.no_grad():
        maps, scores = (t.numpy() for t in detector(paddle.to_tensor(images)))
    use_mkldnn = _read_json(inference_dir / "infer_config.json")["use_mkldnn"]
    static_maps, static_scores = Predictor(str(inference_dir), threads=2, use_mkldnn=use_mkldnn).run(images)
    assert static_maps.shape == (4, 1, config.image_size, config.image_size)
    if package != "kdad":
        np.testing.assert_allclose(static_maps, maps, rtol=1e-4, atol=1e-4 * np.abs(maps).max())
    else:
        # KDAD's maps are input gradients: where a max-pool window's two largest inputs lie within float32 rounding
        # of each other, the gradient goes to either pixel, and the sigma-4 blur spreads that pixel over ~100. The
        # dygraph map itself moves by ~1e-3 under input noise of 1e-6; the exported map may differ from it by no
        # more than that (measured: 4.5e-4 at 0.6 % of the pixels, against 2.1e-3 at 12 % under the noise).
        noise = 1e-6 * np.random.default_rng(0).standard_normal(images.shape).astype(np.float32)
        with paddle.no_grad():
            noisy_maps = detector(paddle.to_tensor(images + noise))[0].numpy()
        tolerance = 1e-4 * np.abs(maps).max()
        assert np.abs(static_maps - maps).max() <= max(np.abs(noisy_maps - maps).max(), tolerance)
        assert (np.abs(static_maps - maps) > tolerance).mean() <= max((np.abs(noisy_maps - maps) > tolerance).mean(),
                                                                       0.01)
    np.testing.assert_allclose(static_scores, scores, rtol=1e-4)


def test_infer_mode_predicts_the_test_folder_and_scores_only_without_pictures(trained, tmp_path):
    package, data_dir, output_dir = trained
    records = command(package, "infer", "--cls", "bottle", "--data_dir", data_dir, "--output_dir", output_dir,
                      "--predict_dir", tmp_path, "--save_pic", "False", "--threads", 2)
    assert len(records) == 10 and all(r["pictures"] == {} for r in records)
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".png")]


def test_onnx_export_runs_under_onnxruntime_and_openvino_and_tampering_is_refused(trained, tmp_path, capsys):
    pytest.importorskip("paddle2onnx")
    pytest.importorskip("onnxruntime")
    package, data_dir, output_dir = trained
    inference_dir = tmp_path / "inference"
    export(package, "--cls", "bottle", "--output_dir", output_dir, "--save_inference_dir", inference_dir,
           "--format", "onnx", "--threads", 2)
    assert "ONNX Runtime vs Paddle" in capsys.readouterr().out  # the export checked it (error above 1e-4)
    inputs = os.path.join(data_dir, "bottle", "test")
    scores = {}
    for backend in ("paddle", "onnxruntime", "openvino"):
        if backend == "openvino" and importlib.util.find_spec("openvino") is None:
            continue
        records = infer("--model_dir", inference_dir, "--input", inputs, "--output_dir", tmp_path / backend,
                        "--backend", backend, "--batch_size", 2, "--threads", 2, "--save_pic", "False")
        scores[backend] = np.array([r["score"] for r in records])
    for backend, values in scores.items():
        np.testing.assert_allclose(values, scores["paddle"], rtol=1e-4, err_msg=backend)
    with open(inference_dir / "inference.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(SystemExit) as exit_info:
        infer("--model_dir", inference_dir, "--input", inputs, "--backend", "onnxruntime")
    assert exit_info.value.code == 2
    assert "changed since it was exported" in capsys.readouterr().err.strip().splitlines()[-1]


def test_every_command_names_the_device_it_uses_first(synthetic_root, tmp_path, capsys):
    """train, eval, predict, export and infer print the device (Paddle's default here: this CPU build) first."""
    out = str(tmp_path / "out")
    first = []

    def first_line():
        first.append(capsys.readouterr().out.splitlines()[0])

    train_tiny("orthoad", synthetic_root, out)
    first_line()
    command("orthoad", "eval", "--cls", "bottle", "--data_dir", synthetic_root, "--output_dir", out, "--threads", 2)
    first_line()
    image = os.path.join(synthetic_root, "bottle", "test", "good", "000.png")
    command("orthoad", "predict", "--cls", "bottle", "--output_dir", out, "--input", image, "--predict_dir",
            tmp_path / "predict", "--threads", 2)
    first_line()
    export("orthoad", "--cls", "bottle", "--output_dir", out, "--save_inference_dir", tmp_path / "inference",
           "--threads", 2)
    first_line()
    infer("--model_dir", tmp_path / "inference", "--input", image, "--output_dir", tmp_path / "infer", "--threads", 2)
    first_line()
    assert first == ["device: cpu (2 threads)"] * 5
