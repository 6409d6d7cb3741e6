"""OrthoAD / PaDiM (OrthoAD-paddle): projection, streaming statistics, Mahalanobis scorer, official metric,
resizing, and an end-to-end fit -> eval -> export -> infer -> predict run on small synthetic data.

References are written independently here: NumPy covariances, scipy's Mahalanobis distance, a literal loop
version of the official OrthoAD ``metric.py``, and torch's ``F.interpolate``.
"""
import os
import random

import numpy as np
import paddle
import pytest
from scipy.spatial.distance import mahalanobis
from skimage.measure import label as skimage_label

from conftest import method_dir

method_dir("OrthoAD-paddle")

from common.core.errors import UserError  # noqa: E402
from common.data.dataset import ImageDataset  # noqa: E402
from common.data.readers import mvtec  # noqa: E402
from method_harness import command, train_tiny  # noqa: E402
from orthoad import (
    data,  # noqa: E402
    trainer,  # noqa: E402
)
from orthoad import evaluate as orthoad_evaluate  # noqa: E402
from orthoad import metric as om  # noqa: E402
from orthoad.checkpoint import NpyRows, load, save_array  # noqa: E402
from orthoad.config import Config  # noqa: E402
from orthoad.loss import StreamingGaussian, precision_factor  # noqa: E402
from orthoad.model import MahalanobisScorer, ProjectedEmbedding, load_projection, make_projection  # noqa: E402


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


def test_precision_factor_is_the_inverse_cholesky_factor():
    """A = L⁻¹ for C = L Lᵀ (NumPy's Cholesky and inverse), lower triangular, AᵀA = C⁻¹; at the WRN50 k=300 size
    and rank (fewer images than k, made definite by eps), and a refused indefinite matrix."""
    rng = np.random.default_rng(0)
    samples = rng.standard_normal((3, 40, 300)) * rng.uniform(0.1, 10, size=(3, 1, 300))
    covariance = np.einsum("mni,mnj->mij", samples, samples) / 40 + 0.01 * np.eye(300)
    factor = precision_factor(covariance)
    expected = np.linalg.inv(np.linalg.cholesky(covariance))
    assert factor.dtype == np.float64 and np.all(np.triu(factor, 1) == 0)
    assert np.abs(factor - expected).max() < 1e-10 * np.abs(expected).max()
    assert np.abs(factor @ np.linalg.cholesky(covariance) - np.eye(300)).max() < 1e-10
    precision = np.linalg.inv(covariance)
    assert np.abs(factor.transpose(0, 2, 1) @ factor - precision).max() < 1e-8 * np.abs(precision).max()
    with pytest.raises(UserError, match="not positive definite"):
        precision_factor(np.array([[[1.0, 2.0], [2.0, 1.0]]]))


def test_fit_statistics_equal_numpy_on_the_dygraph_embedding(monkeypatch):
    """The fit's path (Paddle Inference embedding, features merged several batches at a time) against np.cov of
    the dygraph embedding of the same images."""
    paddle.seed(0)
    embedder = ProjectedEmbedding("resnet18", make_projection("ortho", 448, 8, seed=0), 64, weights=None)
    embedder.eval()
    images = np.random.default_rng(0).standard_normal((20, 3, 64, 64)).astype(np.float32)
    batches = [[paddle.to_tensor(images[i:i + 3])] for i in range(0, 20, 3)]
    monkeypatch.setattr(trainer, "MERGE_IMAGES", 5)       # merges of 6, 6, 6 and the last 2 images
    mean, factor, count = trainer.fit_statistics(embedder, batches, 16 * 16, eps=0.01)
    with paddle.no_grad():
        z = embedder(paddle.to_tensor(images)).numpy().astype(np.float64).reshape(20, 8, -1).transpose(2, 0, 1)
    expected_precision = np.linalg.inv(np.stack([np.cov(x, rowvar=False, bias=True) for x in z]) + 0.01 * np.eye(8))
    precision = np.einsum("pji,pjk->pik", factor.astype(np.float64), factor)
    # measured 3e-7 and 1.3e-5: oneDNN's and Paddle's own kernels differ by ~1e-6 of the feature scale
    assert count == 20 and np.abs(mean - z.mean(axis=1)).max() < 1e-5 * np.abs(z).max()
    assert np.abs(precision - expected_precision).max() < 2e-4 * np.abs(expected_precision).max()


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


def test_detector_postprocessing_equals_torch_interpolate_and_scipy():
    """The official post-processing: F.interpolate(bilinear, align_corners=False) to S, gaussian_filter(sigma 4)."""
    torch = pytest.importorskip("torch")
    from scipy.ndimage import gaussian_filter

    from orthoad.detector import OrthoADDetector

    class FixedDistance(paddle.nn.Layer):  # stands for embedder + scorer: returns the distance map it is given
        grid = (16, 16)

        def forward(self, z):
            return z

    distance = np.random.default_rng(3).gamma(2.0, 1.0, (2, 1, 16, 16)).astype(np.float32)
    detector = OrthoADDetector(paddle.nn.Identity(), FixedDistance(), 64, sigma=4.0)
    amap, score = (t.numpy() for t in detector(paddle.to_tensor(distance)))
    upsampled = torch.nn.functional.interpolate(torch.from_numpy(distance), size=64, mode="bilinear",
                                                align_corners=False).numpy().astype(np.float64)
    expected = np.stack([gaussian_filter(m[0], sigma=4) for m in upsampled])
    np.testing.assert_allclose(amap[:, 0], expected, atol=1e-5 * expected.max())
    np.testing.assert_allclose(score, expected.reshape(2, -1).max(1), rtol=1e-5)


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
# Method defaults, pipelines and fitting (the shared end-to-end checks are in test_method_shape.py)
# ---------------------------------------------------------------------------------------------------------------
def test_official_split_holds_out_every_tenth_sorted_image():
    fit, held = data.official_split(list(range(25)))
    assert held == [0, 10, 20] and fit == [i for i in range(25) if i % 10]


def test_method_defaults_follow_each_reference_code():
    ortho = Config()
    assert (ortho.k, ortho.seed, ortho.train_split, ortho.unbiased, ortho.pipeline, ortho.image_size,
            ortho.mask_threshold, ortho.grid) == (300, 1111, "official", False, "orthoad", 256, 0.5995, (64, 64))
    padim = Config(method="sample", backbone="resnet18")
    assert (padim.method, padim.k, padim.seed, padim.train_split, padim.unbiased, padim.pipeline, padim.image_size,
            padim.mask_threshold, padim.grid) == ("padim", 100, 1024, "all", True, "padim", 224, 0.5, (56, 56))
    assert Config(method="padim").k == 550
    ablation = Config(method="padim", pipeline="orthoad")
    assert (ablation.image_size, ablation.mask_threshold, ablation.unbiased) == (256, 0.5995, True)


def _official_orthoad_transform(path, size=256):
    """jnhwkim/orthoad dataset.py with torchvision's PIL semantics: pil_loader (RGB), Resize(320) (shorter side,
    bilinear), Resize(256), CenterCrop(256), ToTensor; masks then Normalize and channel 0 > 0.5."""
    from PIL import Image

    def resize_shorter(image, side):
        w, h = image.size
        target = (side, int(side * h / w)) if w <= h else (int(side * w / h), side)
        return image.resize(target, Image.BILINEAR)

    image = resize_shorter(resize_shorter(Image.open(path).convert("RGB"), round(size * 1.25)), size)
    left, top = int(round((image.width - size) / 2.0)), int(round((image.height - size) / 2.0))
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0


def _official_padim_mask(path):
    """xiahaifeng1995 PaDiM: Resize(256, NEAREST) (shorter side) -> CenterCrop(224) -> ToTensor."""
    from PIL import Image

    mask = Image.open(path)
    w, h = mask.size
    mask = mask.resize((256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256), Image.NEAREST)
    left, top = int(round((mask.width - 224) / 2.0)), int(round((mask.height - 224) / 2.0))
    return np.asarray(mask.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255.0


def _defect_samples(root):
    return [s for s in mvtec.test_samples(root, "bottle") if s.mask_path][:6]


@pytest.mark.parametrize("source", ["synthetic", "bottle"])
def test_masks_follow_the_official_8_bit_transforms(source, synthetic_root, request):
    root = synthetic_root if source == "synthetic" else request.getfixturevalue("bottle_root")
    samples = _defect_samples(root)
    orthoad = data.preprocess(Config(backbone="resnet18"))
    padim = data.preprocess(Config(method="padim", backbone="resnet18"))
    from common.data.images import open_mask

    for sample in samples:
        mask = open_mask(sample.mask_path)
        expected = (_official_orthoad_transform(sample.mask_path)[..., 0] - 0.485) / 0.229 > 0.5
        assert np.array_equal(orthoad.mask(mask), expected), sample.mask_path
        assert np.array_equal(padim.mask(mask), _official_padim_mask(sample.mask_path) > 0.5), sample.mask_path
    image = _official_orthoad_transform(samples[0].path)
    from common.data.images import open_image
    from common.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    np.testing.assert_allclose(orthoad.image(open_image(samples[0].path)),
                               ((image - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1), atol=1e-6)


@pytest.fixture(scope="module")
def fitted(synthetic_root, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("orthoad_out"))
    train_tiny("orthoad", synthetic_root, out)
    return synthetic_root, out


def test_fit_uses_the_official_split_and_holds_out_the_rest(fitted):
    import json

    data_dir, out = fitted
    with open(os.path.join(out, "bottle", "model.json"), encoding="utf-8") as handle:
        record = json.load(handle)
    assert record["fit"]["num_fit_images"] == 10  # official 90 % split of 12 images
    with open(os.path.join(out, "bottle", "thresholds.json"), encoding="utf-8") as handle:
        thresholds = json.load(handle)
    names = [os.path.basename(p) for p in thresholds["calibration_images"]]
    assert names == ["000.png", "010.png"] and thresholds["held_out"] is True
    assert record["config"]["mask_threshold"] == 0.5995


def test_same_seed_gives_identical_maps_and_w(fitted, tmp_path):
    data_dir, out = fitted
    out2 = str(tmp_path / "out2")
    train_tiny("orthoad", data_dir, out2)
    maps = []
    for folder in (out, out2):
        detector, config, _ = load(os.path.join(folder, "bottle"))
        dataset = ImageDataset(mvtec.test_samples(data_dir, "bottle")[:3], data.preprocess(config))
        maps.append(orthoad_evaluate.test_maps(detector, config, dataset)[0])
    assert np.array_equal(maps[0], maps[1])
    assert np.array_equal(np.load(os.path.join(out, "bottle", "projection.npy")),
                          np.load(os.path.join(out2, "bottle", "projection.npy")))


def test_padim_fits_every_image_with_the_unbiased_covariance(synthetic_root, tmp_path):
    import json

    train_tiny("orthoad", synthetic_root, str(tmp_path), "--method", "padim")
    with open(tmp_path / "bottle" / "model.json", encoding="utf-8") as handle:
        record = json.load(handle)
    assert record["fit"]["num_fit_images"] == len(mvtec.train_samples(synthetic_root, "bottle")) == 12
    assert record["config"]["unbiased"] is True and record["config"]["seed"] == 1024
    results = command("orthoad", "eval", "--cls", "bottle", "--data_dir", synthetic_root, "--output_dir",
                      str(tmp_path), "--method", "sample", "--threads", 2)
    assert os.path.isfile(tmp_path / "results" / "PaDiM_bottle.json") and "orthoad_pro" in results["bottle"]


# ---------------------------------------------------------------------------------------------------------------
# KolektorSDD / KolektorSDD2 as jnhwkim/orthoad runs them (script/run_kolektor.sh, dataset.py, train.py)
# ---------------------------------------------------------------------------------------------------------------
def test_kolektor_configs_follow_run_kolektor_sh():
    from common.core.config import build_config

    for name, dataset, fold in (("kolektor", "kolektor", 0), ("kolektor2", "kolektor2", None)):
        config = build_config(Config, os.path.join(method_dir("OrthoAD-paddle"), "configs", f"{name}.yaml"))
        # run_kolektor.sh: --model resnet18 --k 100; train.py defaults: --scale half, --batch-size 2, --approx
        # ortho, seed 1111, eps 1e-2; dataset.py: every defect-free train image, 704 x 256 (H x W)
        assert (config.dataset, config.fold, config.method, config.backbone, config.k, config.seed, config.eps,
                config.batch_size, config.pipeline, config.train_split, config.unbiased) == \
            (dataset, fold, "ortho", "resnet18", 100, 1111, 0.01, 2, "kolektor", "all", False)
        assert config.input_shape == (704, 256) and config.grid == (176, 64) and config.image_size is None
    # the dataset alone selects the official KolektorSDD class's pipeline; other sizes by the official names
    plain = Config(dataset="kolektor", fold=1)
    assert (plain.pipeline, plain.scale, plain.input_shape, plain.train_split) == ("kolektor", "704x256", (704, 256),
                                                                                   "all")
    assert Config(dataset="kolektor2", scale="1408x512").input_shape == (1408, 512)
    assert Config(dataset="kolektor2", scale="352x128").grid == (88, 32)
    assert Config(scale="352x128").pipeline == "kolektor"             # --scale alone selects the pipeline
    for bad in ({"dataset": "kolektor", "image_size": 64}, {"scale": "704x256", "pipeline": "orthoad"},
                {"dataset": "kolektor", "scale": "big"}, {"dataset": "kolektor", "scale": "700x256"}):
        with pytest.raises(UserError):
            Config(**bad)


def _official_kolektor_item(image_path, mask_path, grayscale, size=(704, 256)):
    """jnhwkim/orthoad KolektorSDD(2): Image.open (KSDD: convert('L')), T.Resize((h, w)) = PIL bilinear,
    ToTensor, KSDD: stacked to 3 channels, Normalize(ImageNet); the mask resized the same way (convert('L')), its
    float values stored in a LongTensor (truncated) and ``> 0``."""
    from PIL import Image

    from common.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    image = Image.open(image_path)
    image = image.convert("L") if grayscale else image
    x = np.asarray(image.resize(size[::-1], Image.BILINEAR), dtype=np.float32) / 255.0
    x = np.stack([x] * 3) if grayscale else x.transpose(2, 0, 1)
    x = (x - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None]
    label = np.asarray(Image.open(mask_path).convert("L").resize(size[::-1], Image.BILINEAR), dtype=np.float32)
    return x, (label / 255.0).astype(np.int64) > 0, label


@pytest.fixture(scope="module")
def kolektor_layouts(tmp_path_factory):
    from common.data import synthetic_layouts

    root = tmp_path_factory.mktemp("kolektor_layouts")
    for layout in ("kolektor", "kolektor2"):
        synthetic_layouts.write_layout(layout, str(root / layout), seed=3)
    return root


@pytest.mark.parametrize("layout", ["kolektor", "kolektor2"])
def test_kolektor_pipeline_equals_the_official_dataset_transform(layout, kolektor_layouts):
    from common.data.readers import test_samples

    config = Config(dataset=layout, fold=0 if layout == "kolektor" else None, backbone="resnet18")
    samples = [s for s in test_samples(layout, str(kolektor_layouts / layout), layout, config.fold) if s.mask_paths]
    items = data.dataset(samples, config)
    checked_edges = 0
    for i, sample in enumerate(samples):
        image, mask = items[i][:2]
        x, expected_mask, label = _official_kolektor_item(sample.path, sample.mask_paths[0], layout == "kolektor")
        assert image.shape == (3, 704, 256) and mask.shape == (1, 704, 256)
        np.testing.assert_allclose(image, x, atol=1e-5)
        assert np.array_equal(mask[0] > 0, expected_mask), sample.path
        # the truncation keeps only the 255 pixels: the edges a 0.5 threshold would add are left out
        checked_edges += int(((label > 127) & ~expected_mask).sum())
    assert checked_edges > 0


@pytest.fixture(scope="module")
def kolektor_fitted(kolektor_layouts, tmp_path_factory):
    """configs/kolektor.yaml at its official 704 x 256 input, with random ResNet-18 weights and k 8 for speed."""
    out = tmp_path_factory.mktemp("kolektor_out")
    data_dir = kolektor_layouts / "kolektor"
    command("orthoad", "train", "--config", os.path.join(method_dir("OrthoAD-paddle"), "configs", "kolektor.yaml"),
            "--fold", 1, "--cls", "kolektor", "--data_dir", data_dir, "--output_dir", out,
            "--backbone_weights", "random", "--k", 8, "--threads", 2)
    # eval reads the dataset, fold and input size of the fitted model
    command("orthoad", "eval", "--cls", "kolektor", "--data_dir", data_dir, "--output_dir", out, "--threads", 2)
    return data_dir, out


def test_kolektor_run_uses_704x256_and_reports_the_official_seg_and_det_auroc(kolektor_fitted):
    import json

    from common.data.readers import test_samples

    data_dir, out = kolektor_fitted
    with open(os.path.join(out, "results", "OrthoAD_kolektor_kolektor.json"), encoding="utf-8") as handle:
        record = json.load(handle)
    assert (record["dataset"], record["config"]["fold"], record["config"]["scale"]) == ("kolektor", 1, "704x256")
    assert {"image_auroc", "pixel_auroc", "au_pro", "orthoad_pixel_roc", "orthoad_image_roc"} <= set(record["metrics"])
    assert "SEG AUROC" in record["protocols"]["orthoad_pixel_roc"]
    assert "DET AUROC" in record["protocols"]["orthoad_image_roc"]

    detector, config, _ = load(os.path.join(out, "kolektor"))
    samples = test_samples("kolektor", str(data_dir), "kolektor", 1)
    dataset = data.dataset(samples, config)
    maps, scores = orthoad_evaluate.test_maps(detector, config, dataset)
    assert maps.shape == (len(samples), 704, 256)                      # non-square maps at the official size
    masks = dataset.masks()
    # SEG / DET AUROC of the run against the literal re-statement of metric.py on the same maps
    assert abs(record["metrics"]["orthoad_pixel_roc"] - _literal_official(maps, masks, 1.0, "tpr")) < 1e-6
    labels = dataset.labels
    points = {}
    for t in sorted(scores, reverse=True):
        points[np.mean(scores[labels == 0] > t)] = np.mean(scores[labels == 1] > t)
    xs = sorted(points)
    ys = [points[x] for x in xs]
    det = xs[0] * ys[0] / 2 + sum((xs[i] - xs[i - 1]) * (ys[i] + ys[i - 1]) / 2 for i in range(1, len(xs) - 1))
    det += (1.0 - xs[-2]) * ((ys[-1] + ys[-2]) / 2 + ys[-2]) / 2
    assert abs(record["metrics"]["orthoad_image_roc"] - det) < 1e-9


def test_kolektor_eval_checks_the_scale_against_the_model(kolektor_fitted, capsys):
    data_dir, out = kolektor_fitted
    with pytest.raises(SystemExit) as exit_info:
        command("orthoad", "eval", "--cls", "kolektor", "--data_dir", data_dir, "--output_dir", out, "--scale",
                "1408x512", "--threads", 2)
    assert exit_info.value.code == 2 and "--scale 1408x512 contradicts the model" in capsys.readouterr().err
    assert list(command("orthoad", "eval", "--cls", "kolektor", "--data_dir", data_dir, "--output_dir", out,
                        "--scale", "half", "--threads", 2)) == ["kolektor"]


def test_kolektor_export_and_infer_keep_the_non_square_input(kolektor_fitted, tmp_path):
    import json

    from PIL import Image

    from method_harness import export, infer

    data_dir, out = kolektor_fitted
    export("orthoad", "--cls", "kolektor", "--output_dir", out)
    folder = os.path.join(out, "kolektor", "inference")
    with open(os.path.join(folder, "infer_config.json"), encoding="utf-8") as handle:
        info = json.load(handle)
    assert info["preprocess"]["resize"] == [704, 256] and info["preprocess"]["grayscale"] is True
    image = os.path.join(data_dir, "kos01", "Part1.jpg")
    infer("--model_dir", folder, "--input", image, "--output_dir", tmp_path)
    assert Image.open(tmp_path / "Part1_heatmap.png").size == (256, 704)
    detector, config, _ = load(os.path.join(out, "kolektor"))
    with open(tmp_path / "predictions.jsonl", encoding="utf-8") as handle:
        predicted = json.loads(handle.readline())["score"]
    from common.data.samples import Sample

    x = data.dataset([Sample(image, 0, "good")], config)[0][0]
    assert abs(predicted - float(detector(paddle.to_tensor(x[None]))[1].numpy()[0])) < 1e-4 * abs(predicted)


def test_kolektor2_run_uses_704x256(kolektor_layouts, tmp_path):
    data_dir = kolektor_layouts / "kolektor2"
    command("orthoad", "train", "--config", os.path.join(method_dir("OrthoAD-paddle"), "configs", "kolektor2.yaml"),
            "--cls", "kolektor2", "--data_dir", data_dir, "--output_dir", tmp_path, "--backbone_weights", "random",
            "--k", 8, "--threads", 2)
    results = command("orthoad", "eval", "--cls", "kolektor2", "--data_dir", data_dir, "--output_dir", tmp_path,
                      "--threads", 2)
    assert list(results) == ["kolektor2"]
    detector, config, _ = load(os.path.join(tmp_path, "kolektor2"))
    amap, _ = detector(paddle.zeros([1, 3, *config.input_shape]))
    assert tuple(amap.shape) == (1, 1, 704, 256) and config.fold is None


def test_kolektor_labels_follow_the_resized_masks(kolektor_layouts, tmp_path):
    """dataset.py labels and selects training images by the resized, truncated mask: a defect that vanishes at
    704 x 256 makes a defect-free image (fitted when in the train split)."""
    import shutil

    from PIL import Image

    root = tmp_path / "kolektor2"
    shutil.copytree(kolektor_layouts / "kolektor2", root)
    rng = np.random.default_rng(0)
    for split, stem in (("train", "10000"), ("test", "20000")):   # defective in the synthetic layout
        image = Image.fromarray(rng.integers(0, 255, (1408, 512, 3), dtype=np.uint8))
        mask = np.zeros((1408, 512), dtype=np.uint8)
        mask[700, 300] = 255                                       # one pixel: gone after halving
        image.save(root / split / f"{stem}.png")
        Image.fromarray(mask).save(root / split / f"{stem}_GT.png")
        _, official_mask, _ = _official_kolektor_item(root / split / f"{stem}.png", root / split / f"{stem}_GT.png",
                                                      False)
        assert not official_mask.any()                             # the official code sees no defect
    official = Config(dataset="kolektor2", backbone="resnet18")
    by_file = Config(dataset="kolektor2", backbone="resnet18", resized_labels=False)
    fit, _ = data.training_split(official, str(root), "kolektor2")
    assert str(root / "train" / "10000.png") in [s.path for s in fit]
    fit, _ = data.training_split(by_file, str(root), "kolektor2")
    assert str(root / "train" / "10000.png") not in [s.path for s in fit]
    for config, label in ((official, 0), (by_file, 1)):
        test = data.test_dataset(config, str(root), "kolektor2")
        assert test.labels[[s.path for s in test.samples].index(str(root / "test" / "20000.png"))] == label
        assert test.labels.sum() == (1 if label == 0 else 2)      # the other defect survives the resize
