"""KDAD and RD4AD on the one-class novelty sets (issue 20): tiny files in each published format
(``one_class_files``), the per-dataset configurations against the official transforms, train -> eval end to end,
and the detection AUROC against a plain re-statement of the official ``detection_test`` / ``detection``.

torchvision is not importable here, so the official transforms are restated with PIL and NumPy, step by step as
torchvision runs them on a PIL image: ``Resize((s, s), filter)`` is ``PIL.Image.resize`` with that filter,
``CenterCrop(c)`` cuts at ``int(round((s - c) / 2))``, ``ToTensor`` divides by 255 and moves channels first,
``Normalize`` subtracts the mean and divides by the std per channel, and ``X.repeat(1, 3, 1, 1)`` copies the one
channel of MNIST three times.
"""
import json
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter
from sklearn.metrics import roc_auc_score

import one_class_files as files
from common.core import config as cfg
from common.data import readers
from conftest import REPO_ROOT, method_dir
from method_harness import command, run_script
from metric_references import official_detection_test

KDAD_DIR, RD4AD_DIR = method_dir("KDAD-paddle"), method_dir("RD4AD-paddle")
from kdad import checkpoint as kdad_checkpoint  # noqa: E402
from kdad import config as kdad_config  # noqa: E402
from kdad import data as kdad_data  # noqa: E402
from rd4ad import checkpoint as rd4ad_checkpoint  # noqa: E402
from rd4ad import config as rd4ad_config  # noqa: E402
from rd4ad import data as rd4ad_data  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# -- the official transforms, restated ----------------------------------------------------------------------------
def to_tensor(pil_image):
    array = np.asarray(pil_image, dtype=np.float32) / 255.0
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def normalize(tensor):
    return (tensor - np.array(MEAN, np.float32)[:, None, None]) / np.array(STD, np.float32)[:, None, None]


def center_crop(pil_image, size):
    top, left = int(round((pil_image.height - size) / 2.0)), int(round((pil_image.width - size) / 2.0))
    return pil_image.crop((left, top, left + size, top + size))


def repeat3(tensor):
    return np.repeat(tensor, 3, axis=0) if tensor.shape[0] == 1 else tensor


def kdad_official(dataset, pil_image):
    """KDAD ``dataloader.py::load_data`` transform of one dataset item, then the ``X.repeat`` of train.py."""
    if dataset == "cifar10":  # Resize((256, 256), Image.ANTIALIAS), CenterCrop(224), ToTensor, Normalize
        return normalize(to_tensor(center_crop(pil_image.resize((256, 256), Image.LANCZOS), 224)))
    if dataset in ("mnist", "fashionmnist"):  # Resize((32, 32)) (bilinear), ToTensor
        return repeat3(to_tensor(pil_image.resize((32, 32), Image.BILINEAR)))
    return to_tensor(pil_image.resize((128, 128), Image.BILINEAR))  # retina: Resize([128, 128]), ToTensor


def rd4ad_official(dataset, pil_image):
    """RD4AD ``dataset.py::load_data`` transform, then the ``img.repeat`` of test.py detection."""
    if dataset == "cifar10":  # Resize((32, 32)), ToTensor, Normalize
        return normalize(to_tensor(pil_image.resize((32, 32), Image.BILINEAR)))
    if dataset in ("mnist", "fashionmnist"):
        return repeat3(to_tensor(pil_image.resize((32, 32), Image.BILINEAR)))
    return to_tensor(pil_image.resize((128, 128), Image.BILINEAR))


# -- tiny files and what the official datasets would hand out -----------------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """{dataset: (root, [(PIL item as torchvision/ImageFolder gives it, class index)] of the test split)}."""
    root = tmp_path_factory.mktemp("one_class")
    batches = files.cifar_batches()
    files.write_cifar_archive(str(root / "cifar10"), files.cifar_files(batches, "py2"))
    test_rows, test_labels = batches["test_batch"]
    out = {"cifar10": (root / "cifar10", [(Image.fromarray(files.cifar_hwc(row)), label)
                                          for row, label in zip(test_rows, test_labels)])}
    for name, seed in (("mnist", 1), ("fashionmnist", 2)):
        arrays = files.mnist_arrays(seed=seed)
        files.write_idx(str(root / name), arrays)
        images, labels = arrays["test"]
        out[name] = (root / name, [(Image.fromarray(image, mode="L"), int(label))
                                   for image, label in zip(images, labels)])
    files.write_oct(str(root / "retina"))
    items = []
    for index, cls in enumerate(("CNV", "DME", "DRUSEN", "NORMAL")):  # ImageFolder: sorted folders, sorted files
        folder = root / "retina" / "test" / cls
        for name in sorted(os.listdir(folder)):
            items.append((Image.open(folder / name).convert("RGB"), index))
    out["retina"] = (root / "retina", items)
    return out


NORMAL = {"cifar10": 3, "mnist": 3, "fashionmnist": 3, "retina": 3}  # retina: 3 = NORMAL


# -- configurations -----------------------------------------------------------------------------------------------
def test_official_default_config_is_cifar10_with_the_official_values():
    config = cfg.build_config(kdad_config.Config, os.path.join(KDAD_DIR, "configs", "config.yaml"))
    assert config == cfg.build_config(kdad_config.Config, os.path.join(KDAD_DIR, "configs", "cifar10.yaml"))
    assert (config.dataset, config.epochs, config.total_epochs, config.lamda, config.batch_size, config.lr,
            config.backbone_weights, config.cloner_config) == ("cifar10", 201, 202, 0.01, 64, 1e-3, "imagenet", "B")
    for name, epochs in (("mnist", 51), ("fashionmnist", 51)):
        other = cfg.build_config(kdad_config.Config, os.path.join(KDAD_DIR, "configs", f"{name}.yaml"))
        assert (other.dataset, other.epochs, other.lamda, other.image_size) == (name, epochs, 0.01, 32)
    retina = cfg.build_config(kdad_config.Config, os.path.join(KDAD_DIR, "configs", "retina.yaml"))
    assert (retina.dataset, retina.lamda, retina.image_size, retina.normalize) == ("retina", 0.01, 128, False)


@pytest.mark.parametrize("dataset", ["cifar10", "mnist", "fashionmnist", "retina"])
def test_kdad_and_rd4ad_preprocessing_equal_the_official_transforms(dataset, data):
    root, items = data[dataset]
    samples = readers.test_samples(dataset, str(root), NORMAL[dataset])
    assert [s.label for s in samples] == [int(label != NORMAL[dataset]) for _, label in items]
    for package, config_class, folder, module, official in (
            ("kdad", kdad_config.Config, KDAD_DIR, kdad_data, kdad_official),
            ("rd4ad", rd4ad_config.Config, RD4AD_DIR, rd4ad_data, rd4ad_official)):
        config = cfg.build_config(config_class, os.path.join(folder, "configs", f"{dataset}.yaml"))
        ours = module.dataset(samples, config)
        for index, (pil_image, _) in enumerate(items):
            expected = official(dataset, pil_image)
            np.testing.assert_allclose(ours[index][0], expected, rtol=0, atol=1e-6,
                                       err_msg=f"{package} {dataset} item {index}")


# -- train -> eval, detection AUROC against the official functions ------------------------------------------------
def only_result(output_dir):
    """The one results JSON of ``output_dir`` and the class folder holding the one checkpoint."""
    (name,) = os.listdir(output_dir / "results")
    with open(output_dir / "results" / name, encoding="utf-8") as handle:
        record = json.load(handle)
    (class_dir,) = [d for d in os.listdir(output_dir) if d not in ("results", "logs") and
                    os.path.isdir(output_dir / d) and (output_dir / d / "thresholds.json").exists()]
    return record, str(output_dir / class_dir)


FAST = {"cifar10": ("--image_size", 64, "--resize", 72)}  # the official 256 -> 224 is checked above


@pytest.mark.parametrize("dataset", ["cifar10", "mnist", "fashionmnist", "retina"])
def test_kdad_one_class_train_eval_and_the_official_detection_test(dataset, data, tmp_path):
    root, items = data[dataset]
    out = tmp_path / "out"
    command("kdad", "train", "--config", os.path.join(KDAD_DIR, "configs", f"{dataset}.yaml"), "--normal_class",
            NORMAL[dataset], "--data_dir", root, "--output_dir", out, "--backbone_weights", "random", "--epochs", 0,
            "--batch_size", 2, "--threads", 2, *FAST.get(dataset, ()))
    # eval reads the dataset the model was trained on; --normal_class takes the index as the official config
    command("kdad", "eval", "--normal_class", NORMAL[dataset], "--data_dir", root, "--output_dir", out,
            "--threads", 2)
    record, class_dir = only_result(out)
    metrics = record["metrics"]
    assert record["dataset"] == dataset
    assert metrics["pixel_auroc"] is None and metrics["au_pro"] is None and metrics["kdad_localization_auroc"] is None
    # the official detection_test on scores of the official transform's tensors, labels = the files' class indices
    detector, _, _ = kdad_checkpoint.load(class_dir)
    if dataset == "cifar10":  # the test's smaller crop, the official steps
        tensors = [normalize(to_tensor(center_crop(p.resize((72, 72), Image.LANCZOS), 64))) for p, _ in items]
    else:
        tensors = [kdad_official(dataset, p) for p, _ in items]
    with paddle.no_grad():
        scores = detector.scores(paddle.to_tensor(np.stack(tensors))).numpy()
    expected = official_detection_test([label for _, label in items], scores.tolist(), NORMAL[dataset])
    assert metrics["kdad_detection_auroc"] == pytest.approx(expected, abs=1e-12)
    assert round(metrics["image_auroc"], 4) == pytest.approx(expected, abs=1e-12)


def official_rd4ad_detection(maps, class_labels, target):
    """RD4AD ``test.py::detection`` after the maps: sigma-4 Gaussian per map, max and sum, normal class -> 0."""
    labels = np.array([0 if label == target else 1 for label in class_labels])
    smoothed = [gaussian_filter(m, sigma=4) for m in maps]
    return (round(roc_auc_score(labels, [np.max(m) for m in smoothed]), 4),
            round(roc_auc_score(labels, [np.sum(m) for m in smoothed]), 4))


@pytest.mark.parametrize("dataset", ["cifar10", "mnist", "retina"])
def test_rd4ad_one_class_train_eval_and_the_official_detection(dataset, data, tmp_path):
    root, items = data[dataset]
    out = tmp_path / "out"
    command("rd4ad", "train", "--config", os.path.join(RD4AD_DIR, "configs", f"{dataset}.yaml"), "--cls",
            NORMAL[dataset], "--data_dir", root, "--output_dir", out, "--backbone", "resnet18",
            "--backbone_weights", "random", "--epochs", 1, "--batch_size", 2, "--threads", 2)
    command("rd4ad", "eval", "--cls", NORMAL[dataset], "--data_dir", root, "--output_dir", out, "--threads", 2)
    record, class_dir = only_result(out)
    metrics = record["metrics"]
    assert record["dataset"] == dataset and metrics["pixel_auroc"] is None and metrics["rd4ad_pro"] is None
    detector, _, _ = rd4ad_checkpoint.load(class_dir)
    with paddle.no_grad():
        maps = detector.raw_map(paddle.to_tensor(np.stack([rd4ad_official(dataset, p) for p, _ in items])))
    maps = maps.numpy()[:, 0].astype(np.float64)
    by_max, by_sum = official_rd4ad_detection(maps, [label for _, label in items], NORMAL[dataset])
    assert round(metrics["image_auroc"], 4) == pytest.approx(by_max, abs=1e-12)
    assert round(metrics["image_auroc_sum"], 4) == pytest.approx(by_sum, abs=1e-12)


# the official default command (configs/config.yaml, CIFAR-10 class 3): tests/test_seed_commands.py


@pytest.mark.slow
def test_kdad_retina_train_export_infer_with_the_image_threshold_of_the_official_score(data, tmp_path):
    """On a one-class set KDAD calibrates the image threshold from the detection scores alone (no saliency map:
    no masks to threshold), the 0.99 quantile of the official score of the NORMAL training images; the model exports
    (its saliency maps pass the export check) and infer scores the test images as the model does."""
    root, _ = data["retina"]
    out = tmp_path / "out"
    command("kdad", "train", "--config", os.path.join(KDAD_DIR, "configs", "retina.yaml"), "--cls", "NORMAL",
            "--data_dir", root, "--output_dir", out, "--backbone_weights", "random", "--epochs", 0, "--threads", 2)
    class_dir = out / "NORMAL"
    with open(class_dir / "thresholds.json", encoding="utf-8") as handle:
        thresholds = json.load(handle)
    detector, _, _ = kdad_checkpoint.load(str(class_dir))

    def official_scores(folder):
        paths = sorted(os.path.join(folder, name) for name in os.listdir(folder))
        tensors = [kdad_official("retina", Image.open(path).convert("RGB")) for path in paths]
        with paddle.no_grad():
            return paths, detector.scores(paddle.to_tensor(np.stack(tensors))).numpy().astype(np.float64)

    _, train_scores = official_scores(root / "train" / "NORMAL")
    assert thresholds["pixel_threshold"] is None and thresholds["num_images"] == len(train_scores)
    assert thresholds["image_threshold"] == pytest.approx(np.quantile(train_scores, 0.99), rel=1e-6)
    exported = run_script("kdad", "export_model.py", "--cls", "NORMAL", "--output_dir", out, "--threads", 2)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    inferred = run_script("kdad", "infer.py", "--model_dir", class_dir / "inference", "--input",
                          root / "test" / "CNV", "--save_dir", tmp_path / "infer", "--threads", 2)
    assert inferred.returncode == 0, inferred.stdout + inferred.stderr
    with open(tmp_path / "infer" / "predictions.jsonl", encoding="utf-8") as handle:
        rows = {row["image"]: row for row in map(json.loads, handle)}
    paths, scores = official_scores(root / "test" / "CNV")
    for path, score in zip(paths, scores):
        assert rows[path]["score"] == pytest.approx(score, rel=1e-4)
        assert rows[path]["is_anomalous"] == (score >= thresholds["image_threshold"])


def test_eval_config_must_be_the_models(data, tmp_path):
    """``main.py --mode eval --config`` (the official test commands pass the training YAML): the model's own file
    evaluates as without it; a file for another dataset, or with another model option, is one error line."""
    root, _ = data["mnist"]
    out = tmp_path / "out"
    mnist_yaml = os.path.join(KDAD_DIR, "configs", "mnist.yaml")
    command("kdad", "train", "--config", mnist_yaml, "--normal_class", 3, "--data_dir", root, "--output_dir", out,
            "--backbone_weights", "random", "--epochs", 0, "--batch_size", 2, "--threads", 2)
    command("kdad", "eval", "--normal_class", 3, "--data_dir", root, "--output_dir", out, "--threads", 2)
    without, _ = only_result(out)
    command("kdad", "eval", "--config", mnist_yaml, "--normal_class", 3, "--data_dir", root, "--output_dir", out,
            "--threads", 2)
    assert only_result(out)[0]["metrics"] == without["metrics"]
    other_size = tmp_path / "other_size.yaml"
    other_size.write_text("dataset: mnist\nimage_size: 64\nepochs: 3\n")  # epochs: a training setting, not checked
    for config, expected in ((os.path.join(KDAD_DIR, "configs", "cifar10.yaml"), "is for --dataset cifar10"),
                             (other_size, "sets image_size 64 but the model")):
        result = run_script("kdad", "main.py", "--mode", "eval", "--config", config, "--normal_class", 3,
                            "--data_dir", root, "--output_dir", out, "--threads", 2)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.returncode == 2 and len(errors) == 1 and expected in errors[0], result.stdout + result.stderr
        assert "Traceback" not in result.stderr


# -- bad input through the commands ------------------------------------------------------------------------------
@pytest.mark.parametrize("package", ["kdad", "rd4ad"])
def test_normal_class_outside_the_dataset_is_one_error_line(package, data, tmp_path):
    root, _ = data["mnist"]
    result = run_script(package, "main.py", "--mode", "train", "--dataset", "mnist", "--normal_class", 10,
                        "--data_dir", root, "--output_dir", tmp_path / "out", "--backbone_weights", "random")
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(lines) == 1 and lines[0].startswith("error:") and "10" in lines[0] and "0, 1, 2" in lines[0]


def _truncated_archive(root):
    archive = files.write_cifar_archive(str(root), files.cifar_files(files.cifar_batches(), "py2"))
    with open(archive, "r+b") as handle:
        handle.truncate(os.path.getsize(archive) // 2)
    return "cifar10", archive


def _idx_counts_disagree(root):
    arrays = files.mnist_arrays()
    arrays["train"] = (arrays["train"][0], arrays["train"][1][:-1])  # 12 images, 11 labels
    paths = files.write_idx(str(root), arrays)
    return "mnist", paths[0]


@pytest.mark.parametrize("make", [_truncated_archive, _idx_counts_disagree], ids=["truncated_archive",
                                                                                  "idx_counts_disagree"])
def test_damaged_files_through_the_command_are_one_error_line(make, tmp_path):
    dataset, named = make(tmp_path / "data")
    result = run_script("kdad", "main.py", "--mode", "train", "--dataset", dataset, "--normal_class", 3,
                        "--data_dir", tmp_path / "data", "--output_dir", tmp_path / "out", "--backbone_weights",
                        "random")
    # as tests/test_bad_input.py: exit 2, no traceback, an ``error:`` last line; a file read inside the per-class
    # loop is named on the class's own line before it ("[3] training failed: FILE ...")
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and lines[-1].startswith("error:"), lines
    assert os.path.basename(named) in result.stderr and len(lines) <= 2, lines


# -- a whole benchmark through scripts/reproduce.sh ---------------------------------------------------------------
def test_reproduce_runs_the_ten_classes_with_the_dataset_config(data, tmp_path):
    """``scripts/reproduce.py kdad --dataset mnist --cls all``: every one of the ten classes is trained (with
    ``configs/mnist.yaml``, the official MNIST settings) and evaluated by a worker. ``PYTHON`` is a stand-in that
    records each command instead of running it, so the scheduling is checked in a second."""
    root, _ = data["mnist"]
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    fake.chmod(0o755)
    env = dict(os.environ, DATA_DIR=str(root), OUTPUT_DIR=str(tmp_path / "out"), LOG_DIR=str(tmp_path / "logs"),
               PYTHON=str(fake))
    # reproduce.sh is ``exec $PYTHON scripts/reproduce.py``: called directly so that PYTHON is the stand-in only
    # for the per-class commands
    result = subprocess.run([sys.executable, "scripts/reproduce.py", "kdad", "--dataset", "mnist", "--cls", "all",
                             "--workers", "2", "--threads", "1"], cwd=REPO_ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = calls.read_text().splitlines()
    trained = sorted(line.split("--cls ")[1].split()[0] for line in lines if "--mode train" in line)
    evaluated = sorted(line.split("--cls ")[1].split()[0] for line in lines if "--mode eval" in line)
    assert trained == evaluated == [str(digit) for digit in range(10)]
    assert all("--dataset mnist" in line and "--config configs/mnist.yaml" in line
               for line in lines if "--mode train" in line)


def test_kdad_official_retina_training_set_is_an_option(data, tmp_path, capsys):
    """``--train_classes all``: the official ``ImageFolder('OCT2017/train')``, every class folder (2 CNV, 1 DME,
    1 DRUSEN, 3 NORMAL in the tiny copy); the default trains on NORMAL only. Thresholds come from NORMAL images."""
    root, _ = data["retina"]
    common = ("--config", os.path.join(KDAD_DIR, "configs", "retina.yaml"), "--normal_class", 3, "--data_dir", root,
              "--backbone_weights", "random", "--epochs", 0, "--batch_size", 2, "--image_size", 32, "--threads", 2)
    for option, count in (("normal", 3), ("all", 7)):
        capsys.readouterr()
        command("kdad", "train", *common, "--train_classes", option, "--output_dir", tmp_path / option)
        assert f"on {count} images" in capsys.readouterr().out
        with open(tmp_path / option / "NORMAL" / "thresholds.json", encoding="utf-8") as handle:
            record = json.load(handle)
        assert record["num_images"] == 3 and all("NORMAL" in path for path in record["calibration_images"])
    with pytest.raises(SystemExit) as info:
        command("kdad", "train", "--dataset", "mnist", "--train_classes", "all", "--data_dir", data["mnist"][0],
                "--output_dir", tmp_path / "mnist")
    assert info.value.code == 2
