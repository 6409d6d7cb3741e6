"""OrthoAD / PaDiM (OrthoAD-paddle): projection, streaming statistics, Mahalanobis scorer, official metric,
resizing, and an end-to-end fit -> eval -> export -> infer -> predict run on small synthetic data.

References are written independently here: NumPy covariances, scipy's Mahalanobis distance, a literal loop
version of the official OrthoAD ``metric.py``, and torch's ``F.interpolate``.
"""
import json
import os
import random
import subprocess
import sys

import numpy as np
import paddle
import pytest
from scipy.spatial.distance import mahalanobis
from skimage.measure import label as skimage_label

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHOD_DIR = os.path.join(REPO, "OrthoAD-paddle")
sys.path.insert(0, METHOD_DIR)

from common.errors import UserError  # noqa: E402
from common.synthetic import make_dataset  # noqa: E402
from orthoad import metric as om  # noqa: E402
from orthoad.gaussian import StreamingGaussian  # noqa: E402
from orthoad.model import MahalanobisScorer, ProjectedEmbedding  # noqa: E402
from orthoad.projection import load_projection, make_projection  # noqa: E402
from orthoad.storage import NpyRows, save_array  # noqa: E402

try:
    import torch
except ImportError:
    torch = None


# ---------------------------------------------------------------------------------------------------------------
# Projection
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels,k", [(1792, 300), (448, 100)])
def test_ortho_projection_is_semi_orthogonal(channels, k):
    weight = make_projection("ortho", channels, k, seed=1111).astype(np.float64)
    assert weight.shape == (channels, k)
    assert np.abs(weight.T @ weight - np.eye(k)).max() < 1e-5
    assert np.array_equal(weight, make_projection("ortho", channels, k, seed=1111))
    assert not np.allclose(weight, make_projection("ortho", channels, k, seed=1112))


def test_padim_projection_is_the_reference_channel_subset():
    # PaDiM's main.py: random.seed(1024); idx = sample(range(0, t_d), d)
    random.seed(1024)
    expected = random.sample(range(0, 448), 100)
    weight = make_projection("padim", 448, 100, seed=1024)
    assert np.array_equal(weight.argmax(axis=0), expected)
    assert np.array_equal(weight.sum(axis=0), np.ones(100)) and weight.sum() == 100
    assert np.array_equal(make_projection("sample", 448, 100, seed=1024), weight)


def test_projection_file_round_trip_and_shape_check(tmp_path):
    weight = make_projection("gaussian", 448, 7, seed=3)
    path = str(tmp_path / "w.npy")
    np.save(path, weight)
    assert np.array_equal(load_projection(path, 448, 7), weight)
    with pytest.raises(UserError):
        load_projection(path, 1792, 7)
    with pytest.raises(UserError):
        make_projection("ortho", 10, 11, seed=0)


# ---------------------------------------------------------------------------------------------------------------
# Streaming statistics and Mahalanobis distance
# ---------------------------------------------------------------------------------------------------------------
def _features(n=23, k=6, positions=12, seed=0):
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((positions, k, k))
    z = np.einsum("pkl,npl->nkp", mixing, rng.standard_normal((n, positions, k))) + 50.0  # offset stresses float32
    return z.astype(np.float32)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("unbiased", [False, True])
def test_streaming_statistics_equal_batch_numpy(dtype, unbiased):
    z = _features()
    stats = StreamingGaussian(12, 6, dtype=dtype, chunk=5)
    for start, stop in [(0, 5), (5, 6), (6, 17), (17, 23)]:
        stats.update(z[start:stop])
    per_position = z.astype(np.float64).transpose(2, 0, 1)                      # (P, N, k)
    expected_cov = np.stack([np.cov(x, rowvar=False, bias=not unbiased) for x in per_position])
    expected_mean = per_position.mean(axis=1)
    tolerance = 1e-5 if dtype == "float32" else 1e-10
    assert stats.count == 23
    assert np.abs(stats.mean - expected_mean).max() < 1e-9
    assert np.abs(stats.covariance(unbiased) - expected_cov).max() < tolerance * np.abs(expected_cov).max()
    mean, factor = stats.finalize(eps=0.01, unbiased=unbiased)
    precision = np.einsum("pji,pjk->pik", factor.astype(np.float64), factor)      # AᵀA
    expected_precision = np.linalg.inv(expected_cov + 0.01 * np.eye(6))
    assert np.abs(precision - expected_precision).max() < 1e-4 * np.abs(expected_precision).max()
    assert np.allclose(mean, expected_mean, rtol=1e-6)


def test_mahalanobis_scorer_equals_scipy():
    z = _features(n=9, k=5, positions=4 * 3)
    per_position = z.astype(np.float64).transpose(2, 0, 1)
    stats = StreamingGaussian(12, 5)
    stats.update(z)
    mean, factor = stats.finalize(eps=0.01)
    covariances = np.stack([np.cov(x, rowvar=False, bias=True) for x in per_position]) + 0.01 * np.eye(5)
    queries = z[:3] + np.random.default_rng(1).normal(0, 2, size=z[:3].shape).astype(np.float32)
    expected = np.array([[mahalanobis(queries[n, :, p], per_position[p].mean(0), np.linalg.inv(covariances[p]))
                          for p in range(12)] for n in range(3)]).reshape(3, 1, 4, 3)
    scorer = MahalanobisScorer(mean, factor, (4, 3), chunk=5)
    got = scorer(paddle.to_tensor(queries.reshape(3, 5, 4, 3))).numpy()
    assert np.abs(got - expected).max() < 1e-4 * expected.max()


def test_npy_rows_reads_slices(tmp_path):
    array = np.arange(5 * 3 * 2, dtype=np.float32).reshape(5, 3, 2)
    path = str(tmp_path / "a.npy")
    save_array(path, array)
    rows = NpyRows(path)
    assert rows.shape == (5, 3, 2) and np.array_equal(rows[1:4], array[1:4]) and np.array_equal(rows[3:9], array[3:])


# ---------------------------------------------------------------------------------------------------------------
# Embedding and resizing
# ---------------------------------------------------------------------------------------------------------------
def test_projected_embedding_equals_projected_concatenation():
    paddle.seed(0)
    weight = make_projection("ortho", 448, 16, seed=0)
    embedder = ProjectedEmbedding("resnet18", weight, 64, weights=None)
    images = paddle.to_tensor(np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32))
    with paddle.no_grad():
        full = embedder.embedding(images).numpy()
        reduced = embedder(images).numpy()
    features = [f.numpy() for f in embedder.backbone(images)]
    # straightforward nearest upsampling by repetition, then concatenation [l1, l2, l3]
    manual = np.concatenate([features[0], features[1].repeat(2, 2).repeat(2, 3), features[2].repeat(4, 2).repeat(4, 3)],
                            axis=1)
    assert full.shape == (2, 448, 16, 16) and np.array_equal(full, manual)
    expected = np.einsum("nchw,ck->nkhw", manual.astype(np.float64), weight)
    assert np.abs(reduced - expected).max() < 1e-5 * np.abs(expected).max()


# ---------------------------------------------------------------------------------------------------------------
# Official OrthoAD metric: a literal re-statement of metric.py (loops over thresholds, images and regions)
# ---------------------------------------------------------------------------------------------------------------
def _literal_official(maps, masks, at_fpr, kind, num_samples=1000):
    worst = maps[np.argmax([m.max() for m in maps])].ravel()
    thresholds = [np.sort(worst)[max(1, int(np.floor(worst.size * i / num_samples))) - 1]
                  for i in range(num_samples, 0, -1)]
    points = {}
    for threshold in thresholds:
        fprs, ys = [], []
        for amap, mask in zip(maps, masks):
            pred = amap > threshold
            if (~mask).sum():
                fprs.append((pred & ~mask).sum() / (~mask).sum())
            if mask.sum():
                if kind == "tpr":
                    ys.append((pred & mask).sum() / mask.sum())
                else:
                    regions = skimage_label(mask, connectivity=2)
                    ys.append(np.mean([(pred & (regions == r)).sum() / (regions == r).sum()
                                       for r in range(1, regions.max() + 1)]))
        fpr = float(np.mean(fprs)) if fprs else 0.0
        points[fpr] = float(np.mean(ys))
        if fpr > at_fpr:
            break
    xs = sorted(points)
    ys = [points[x] for x in xs]
    area = 0.0
    for i in range(len(xs)):
        if i == 0:
            area += xs[0] * ys[0] / 2
        elif i == len(xs) - 1:
            area += (at_fpr - xs[i - 1]) * ((ys[i] + ys[i - 1]) / 2 + ys[i - 1]) / 2
        else:
            area += (xs[i] - xs[i - 1]) * (ys[i] + ys[i - 1]) / 2
    return area / at_fpr


def _metric_data(quantised):
    rng = np.random.default_rng(5)
    masks = np.zeros((6, 24, 24), dtype=bool)
    masks[1, 3:8, 4:9] = True
    masks[1, 15:20, 15:18] = True      # two regions in one image
    masks[2, 10:14, 2:20] = True
    masks[3, 0:24, 0:3] = True
    masks[4, 5:6, 5:6] = True          # one-pixel region
    maps = rng.gamma(2.0, 1.0, size=masks.shape) + 2.5 * masks * rng.uniform(0.3, 1.5, size=masks.shape)
    if quantised:  # tied scores; defect pixels on their own grid, so some thresholds change y but not FPR
        maps = np.round(maps * 2) / 2 + 0.25 * masks
    return maps.astype(np.float32), masks


@pytest.mark.parametrize("quantised", [False, True])
def test_official_metric_equals_literal_restatement(quantised):
    maps, masks = _metric_data(quantised)
    assert abs(om.orthoad_pro(masks, maps) - _literal_official(maps, masks, 0.3, "pro")) < 1e-9
    assert abs(om.orthoad_pixel_roc(masks, maps) - _literal_official(maps, masks, 1.0, "tpr")) < 1e-9
    assert abs(om.orthoad_pro(masks, maps, num_samples=37)
               - _literal_official(maps, masks, 0.3, "pro", num_samples=37)) < 1e-9


def test_official_image_roc_and_undefined_cases():
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.5, 0.3, 0.4, 0.9, 0.8, 0.5])
    # literal: every score (descending) a threshold, pred = score > t, keyed by FPR, slope area to 1.0
    points = {}
    for t in sorted(scores, reverse=True):
        fpr = np.mean(scores[labels == 0] > t)
        points[fpr] = np.mean(scores[labels == 1] > t)
    xs = sorted(points)
    ys = [points[x] for x in xs]
    area = xs[0] * ys[0] / 2 + sum((xs[i] - xs[i - 1]) * (ys[i] + ys[i - 1]) / 2 for i in range(1, len(xs) - 1))
    area += (1.0 - xs[-2]) * ((ys[-1] + ys[-2]) / 2 + ys[-2]) / 2
    assert abs(om.orthoad_image_roc(labels, scores) - area) < 1e-12
    assert om.orthoad_image_roc(np.ones(3), np.arange(3.0)) is None
    assert om.orthoad_pro(np.zeros((2, 4, 4), bool), np.random.default_rng(0).random((2, 4, 4))) is None


# ---------------------------------------------------------------------------------------------------------------
# End to end through the command-line scripts
# ---------------------------------------------------------------------------------------------------------------
SMALL = ["--arch", "resnet18", "--k", "12", "--backbone_weights", "random", "--image_size", "64", "--threads", "1"]


def _run(script, *args):
    result = subprocess.run([sys.executable, script, *args], cwd=METHOD_DIR, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("orthoad")
    data = str(root / "data")
    make_dataset(data, classes=("bottle",), size=64, n_train=12, n_test_good=3, n_test_defect=2)
    out = str(root / "out")
    stdout = _run("train.py", "--data_path", data, "--category", "bottle", "--output_dir", out, "--eval",
                  "--eval_PRO", *SMALL)
    return data, out, stdout


@pytest.mark.slow
def test_fit_eval_export_infer_predict(fitted, tmp_path):
    data, out, stdout = fitted
    assert "summary" in stdout
    with open(os.path.join(out, "results", "OrthoAD_bottle.json"), encoding="utf-8") as handle:
        record = json.load(handle)
    metrics = record["metrics"]
    for name in ("image_auroc", "pixel_auroc", "au_pro", "orthoad_pro", "orthoad_pixel_roc", "orthoad_image_roc"):
        assert 0.0 <= metrics[name] <= 1.0, name
    assert record["config"]["num_fit_images"] == 10          # official 90 % split of 12 images
    assert record["threshold"]["held_out"] == ["000.png", "010.png"]
    assert record["config"]["mask_threshold"] == 0.5995

    # eval in a new process rebuilds the same model (random backbone drawn from the seed) -> same metrics
    _run("main.py", "--mode", "eval", "--cls", "bottle", "--data_dir", data, "--output_dir", out, "--threads", "1")
    with open(os.path.join(out, "results", "OrthoAD_bottle.json"), encoding="utf-8") as handle:
        again = json.load(handle)["metrics"]
    for name, value in metrics.items():
        assert again[name] == pytest.approx(value, abs=1e-9), name

    # export (the script itself checks exported vs dygraph to 1e-4), then Paddle Inference on a folder
    assert "max relative difference" in _run("export_model.py", "--category", "bottle", "--output_dir", out,
                                              "--threads", "1")
    infer_dir = str(tmp_path / "infer")
    _run("infer.py", "--model_dir", os.path.join(out, "bottle", "inference"), "--input",
         os.path.join(data, "bottle", "test", "blob"), "--output_dir", infer_dir, "--batch_size", "2",
         "--benchmark", "True", "--threads", "1")
    predict_dir = str(tmp_path / "predict")
    _run("predict.py", os.path.join(data, "bottle", "test", "blob"), "--category", "bottle", "--output_dir", out,
         "--predict_dir", predict_dir, "--threads", "1")
    with open(os.path.join(infer_dir, "predictions.jsonl"), encoding="utf-8") as handle:
        inferred = [json.loads(line) for line in handle]
    with open(os.path.join(predict_dir, "predictions.json"), encoding="utf-8") as handle:
        predicted = json.load(handle)
    assert len(inferred) == len(predicted) == 2
    for a, b in zip(inferred, predicted):
        assert a["score"] == pytest.approx(b["score"], rel=1e-4)
        assert a["is_anomalous"] == b["is_anomalous"]
        assert os.path.isfile(b["pictures"]["heatmap"]) and os.path.isfile(b["pictures"]["mask"])


@pytest.mark.slow
def test_same_seed_gives_identical_maps_and_w_is_shared(fitted, tmp_path):
    from orthoad.trainer import load_model, predict_maps, preprocess_from_dict
    from common.mvtec import MVTecDataset, test_samples

    data, out, _ = fitted
    out2 = str(tmp_path / "out2")
    _run("main.py", "--mode", "train", "--cls", "bottle", "--data_dir", data, "--output_dir", out2, *SMALL)
    maps = []
    for folder in (out, out2):
        model, config, _ = load_model(os.path.join(folder, "bottle"))
        dataset = MVTecDataset(test_samples(data, "bottle")[:3], preprocess_from_dict(config["preprocess"]))
        maps.append(predict_maps(model, dataset, 4)[0])
    assert np.array_equal(maps[0], maps[1])
    assert np.array_equal(np.load(os.path.join(out, "projection.npy")),
                          np.load(os.path.join(out2, "bottle", "projection.npy")))


def test_user_errors_exit_2(tmp_path):
    result = subprocess.run([sys.executable, "main.py", "--mode", "eval", "--cls", "bottle", "--data_dir",
                             str(tmp_path / "missing")], cwd=METHOD_DIR, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("error:")
