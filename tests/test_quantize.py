"""Reduced-precision export (issue 22): INT8 post-training quantisation with the accuracy check, the refusal of a
broken calibration, and the one-line error of a CPU without bf16/fp16.

Tiny models on the synthetic classes (tests/method_harness.py). The accuracy figures the export records are
recomputed here from the folders' own outputs with numpy (np.corrcoef, sklearn's roc_auc_score), not with the code
under test."""
import json
import os

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from method_harness import export, infer, train_tiny

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")
pytest.importorskip("paddle2onnx")
pytest.importorskip("ml_dtypes")


@pytest.fixture(scope="module")
def trained(synthetic_root, tmp_path_factory):
    """``package -> output folder`` of tiny models, trained once per module."""
    root = tmp_path_factory.mktemp("quantize")
    done = {}

    def get(package):
        if package not in done:
            out = str(root / package)
            assert train_tiny(package, synthetic_root, out) != 2
            done[package] = out
        return done[package]

    return get


def export_int8(package, out, data_dir, folder, *extra):
    return export(package, "--output_dir", out, "--cls", "bottle", "--precision", "int8", "--data_dir", data_dir,
                  "--save_inference_dir", folder, "--threads", 2, *extra)


@pytest.fixture(scope="module")
def train_only(synthetic_root, tmp_path_factory):
    """The synthetic bottle class without its test set: the export then enforces the map-correlation bound on
    held-back normal images (a 6-image test set moves AUROC in steps of 1/8, so one rank swap of a near-random tiny
    model's scores would decide the test)."""
    import shutil

    root = tmp_path_factory.mktemp("train_only")
    shutil.copytree(os.path.join(synthetic_root, "bottle", "train"), root / "bottle" / "train")
    return str(root)


# KDAD included: its map is an input gradient whose max-pool routing needs the float32 feature tensors
# (common.deploy.quantize.float_inputs_outside_networks); without them the map went flat (correlation 0.0)
@pytest.mark.parametrize("package", ["rd4ad", "efficientad", "kdad"])
def test_int8_passes_and_runs_like_any_folder(trained, synthetic_root, train_only, tmp_path, package):
    """INT8 export passes the default bound; the folder has quantised convolutions, records its accuracy per
    backend, and infer.py runs it on each validated backend (sha256 checked) with maps that follow float32's."""
    import onnx

    from common.data.images import open_image
    from common.data.transforms import Preprocess
    from common.deploy.backends import make_runner

    out = trained(package)
    fp32, int8 = str(tmp_path / "fp32"), str(tmp_path / "int8")
    assert export(package, "--output_dir", out, "--cls", "bottle", "--format", "onnx",
                  "--save_inference_dir", fp32) != 2
    assert export_int8(package, out, train_only, int8) != 2
    with open(os.path.join(int8, "infer_config.json"), encoding="utf-8") as handle:
        info = json.load(handle)
    assert info["precision"] == "int8" and set(info["backends"]) == {"openvino", "onnxruntime"}
    assert info["accuracy"]["enforced"].startswith("no test set")
    ops = [n.op_type for n in onnx.load(os.path.join(int8, "inference.onnx")).graph.node]
    assert ops.count("DequantizeLinear") > 0 and "QuantizeLinear" in ops
    test = os.path.join(synthetic_root, "bottle", "test")
    reference = infer("--model_dir", fp32, "--input", test, "--save_pic", "false", "--output_dir", str(tmp_path / "r"))
    preprocess = Preprocess(**info["preprocess"])
    images = np.stack([preprocess.image(open_image(r["image"])) for r in reference]).astype(np.float32)
    float_maps = make_runner(fp32, "onnxruntime").run(images)
    float_maps = next(o for o in float_maps if o.ndim == 4)
    for backend in info["backends"]:
        rows = infer("--model_dir", int8, "--input", test, "--backend", backend, "--save_pic", "false",
                     "--output_dir", str(tmp_path / backend))
        assert [r["image"] for r in rows] == [r["image"] for r in reference]
        # per-image Pearson correlation of the INT8 and float32 maps of the test images (defects included)
        maps = next(o for o in make_runner(int8, backend).run(images) if o.ndim == 4)
        correlations = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(maps, float_maps)]
        assert min(correlations) > 0.9, (backend, correlations)  # tiny 4-channel networks: 0.93 measured
        assert info["accuracy"]["backends"][backend]["held_back_normal"]["map_correlation_min"] >= 0.98
    # the web demo runs it with the same default backend and the same file check
    from common.deploy.app import ExportedModel

    model = ExportedModel(int8)
    assert model.backend == info["backends"][0]
    score, _, _, _ = model.detect(open_image(reference[0]["image"]), model.image_threshold, model.pixel_threshold)
    assert np.isfinite(score)
    # the INT8 folder names the backends that run it
    with pytest.raises(SystemExit) as exit_info:
        infer("--model_dir", int8, "--input", test, "--backend", "paddle")
    assert exit_info.value.code == 2


def test_int8_with_test_set_records_the_metrics(trained, synthetic_root, tmp_path):
    """With the test set the export recomputes image AUROC, pixel AUROC and AU-PRO for float32 and INT8 on each
    backend; the recorded float32 image AUROC is sklearn's on the float32 folder's own scores."""
    out = trained("rd4ad")
    folder, fp32 = str(tmp_path / "int8"), str(tmp_path / "fp32")
    assert export_int8("rd4ad", out, synthetic_root, folder, "--accept_accuracy_drop") != 2
    assert export("rd4ad", "--output_dir", out, "--cls", "bottle", "--save_inference_dir", fp32) != 2
    with open(os.path.join(folder, "infer_config.json"), encoding="utf-8") as handle:
        record = json.load(handle)["accuracy"]
    rows = infer("--model_dir", fp32, "--input", os.path.join(synthetic_root, "bottle", "test"), "--save_pic",
                 "false", "--output_dir", str(tmp_path / "r"))
    labels = [0 if "/good/" in r["image"].replace(os.sep, "/") else 1 for r in rows]
    for backend, figures in record["backends"].items():
        test = figures["test_set"]
        assert set(test["float32"]) == {"image_auroc", "pixel_auroc", "au_pro"}
        assert test["float32"]["image_auroc"] == pytest.approx(roc_auc_score(labels, [r["score"] for r in rows]),
                                                               abs=1e-6)
        assert test["drop"]["au_pro"] == pytest.approx(test["float32"]["au_pro"] - test["reduced"]["au_pro"],
                                                       abs=1e-5)


def test_broken_calibration_is_refused(trained, train_only, tmp_path, capsys, monkeypatch):
    """Calibration images all one grey (what a wrong folder or a reader bug would feed it) give ranges that clip
    real images' activations: the check on real held-back images refuses in one line with the figures and nothing
    is written; --accept_accuracy_drop writes it with the figures recorded."""
    from common.deploy import quantize

    original = quantize.quantize_int8
    monkeypatch.setattr(quantize, "quantize_int8", lambda onnx_file, out_file, calibration, *args, **kwargs:
                        original(onnx_file, out_file, np.full_like(calibration, 0.5), *args, **kwargs))
    out = trained("efficientad")
    folder = str(tmp_path / "int8")
    with pytest.raises(SystemExit) as exit_info:
        export_int8("efficientad", out, train_only, folder)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and err[0].startswith("error:"), err
    assert "accuracy bound" in err[0] and "map correlation" in err[0] and not os.path.exists(folder)
    assert export_int8("efficientad", out, train_only, folder, "--accept_accuracy_drop") != 2
    with open(os.path.join(folder, "infer_config.json"), encoding="utf-8") as handle:
        assert json.load(handle)["accuracy"]["accepted_drop"]


def test_calibration_folder_defaults_to_the_training_folder(trained, synthetic_root):
    """Without --data_dir the calibration images come from the folder thresholds.json's image paths lie in."""
    from common.cli.export_model import recorded_data_dir

    with open(os.path.join(trained("efficientad"), "bottle", "thresholds.json"), encoding="utf-8") as handle:
        thresholds = json.load(handle)
    assert os.path.samefile(recorded_data_dir(thresholds, "bottle"), synthetic_root)
    assert recorded_data_dir({"calibration_images": ["/data/mvtec/bottle/train/good/000.png"]}, "bottle") == \
        "/data/mvtec"
    assert recorded_data_dir({}, "bottle") is None


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cpu_without_the_precision_gets_one_line(trained, synthetic_root, tmp_path, capsys, monkeypatch, precision):
    from common.deploy import quantize

    monkeypatch.setattr(quantize, "cpu_flags", lambda: {"avx2", "fma"})
    folder = str(tmp_path / precision)
    with pytest.raises(SystemExit) as exit_info:
        export("rd4ad", "--output_dir", trained("rd4ad"), "--cls", "bottle", "--precision", precision,
               "--data_dir", synthetic_root, "--save_inference_dir", folder)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and err[0].startswith("error:"), err
    assert f"--precision {precision} needs" in err[0] and "AVX512" in err[0] and "avx2" in err[0]
    assert not os.path.exists(folder)
