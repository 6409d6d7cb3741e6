"""Tests of common.metrics against the slow references in tests/metric_references.py and hand-computed values."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from common import metrics
from common.core.errors import UserError
from conftest import method_dir
from metric_references import mvtec_au_pro, naive_au_pro, rd4ad_pro_loop

method_dir("RD4AD-paddle")
from rd4ad.metric import rd4ad_pro  # noqa: E402 - RD4AD's own protocol lives in its method folder


def random_case(rng, max_images=5, max_side=20):
    """Small random masks (some images normal, blobs of several pixels) and maps with or without ties."""
    count = int(rng.integers(1, max_images + 1))
    shape = (count, int(rng.integers(4, max_side)), int(rng.integers(4, max_side)))
    masks = rng.random(shape) < rng.choice([0.03, 0.1, 0.3])
    if rng.random() < 0.5:
        masks = ndimage.binary_dilation(masks, structure=np.ones((1, 2, 2), bool))
    masks[rng.random(count) < 0.3] = False  # some normal images
    maps = rng.random(shape)
    if rng.random() < 0.3:
        maps += 0.5 * masks  # a map that is partly right
    if rng.random() < 0.5:
        maps = np.round(maps * rng.integers(2, 12)) / 10  # heavy ties
    if rng.random() < 0.4:
        maps = maps.astype(np.float32)
    return masks, maps


# ------------------------------------------------------------------------------------------------------------------
# AU-PRO (official MVTec protocol)
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_au_pro_matches_official_and_naive_references(seed):
    rng = np.random.default_rng(seed)
    checked = 0
    for _ in range(40):
        masks, maps = random_case(rng)
        limit = float(rng.choice([0.3, 0.3, 0.05, 0.25, 0.5, 1.0]))
        ours = metrics.au_pro(masks, maps, integration_limit=limit)
        if not masks.any() or masks.all():
            assert ours is None
            continue
        assert ours == pytest.approx(mvtec_au_pro(masks, maps, limit), abs=1e-6)
        assert ours == pytest.approx(naive_au_pro(masks, maps, limit), abs=1e-6)
        checked += 1
    assert checked > 20


def test_au_pro_matches_official_on_larger_realistic_maps():
    rng = np.random.default_rng(10)
    masks = np.zeros((12, 64, 64), bool)
    for mask in masks[:8]:
        for _ in range(rng.integers(1, 4)):
            row, col = rng.integers(4, 60, 2)
            mask[row - rng.integers(1, 5):row + rng.integers(1, 5), col - rng.integers(1, 5):col + 3] = True
    maps = ndimage.gaussian_filter(masks.astype(float), (0, 2, 2)) + 0.2 * rng.random(masks.shape)
    for candidate in (maps, maps.astype(np.float32), np.round(maps, 2)):
        for limit in (0.3, 0.02, 1.0):
            assert metrics.au_pro(masks, candidate, limit) == pytest.approx(
                mvtec_au_pro(masks, candidate, limit), abs=1e-6)


def test_au_pro_hand_cases():
    mask = np.zeros((1, 4, 4), bool)
    mask[0, 1:3, 1:3] = True
    assert metrics.au_pro(mask, mask.astype(float)) == pytest.approx(1.0)  # perfect map
    # Constant map: the curve is the diagonal (0,0)-(1,1): area 0.3**2/2, divided by 0.3.
    assert metrics.au_pro(mask, np.full(mask.shape, 0.7)) == pytest.approx(0.15)


def test_au_pro_region_that_never_reaches_the_limit():
    # Region A (2 px) scores highest, region B (1 px) lowest, the 13 normal pixels tie in between:
    # points (0,0) (0,0.5) (1,0.5) (1,1) -> PRO 0.5 over the whole range up to 0.3.
    masks = np.zeros((1, 4, 4), bool)
    masks[0, 0, 0:2] = True
    masks[0, 3, 3] = True
    maps = np.full(masks.shape, 0.5)
    maps[0, 0, 0:2] = 1.0
    maps[0, 3, 3] = 0.0
    assert metrics.au_pro(masks, maps) == pytest.approx(0.5)


def test_au_pro_interpolates_at_the_limit_and_merges_ties():
    # One region of 2 px, 4 normal pixels (FPR steps of 0.25, exact in float32).
    masks = np.array([[[True, True, False, False, False, False]]])
    # Order n1, r1, n2, r2, n3, n4: points (0.25,0) (0.25,0.5) (0.5,0.5) ... area to 0.3 = 0.5 * 0.05.
    maps = np.array([[[0.8, 0.6, 0.9, 0.7, 0.2, 0.1]]])
    assert metrics.au_pro(masks, maps) == pytest.approx(0.025 / 0.3)
    # r1 tied with n1: one merged point (0.25, 0.5); area 0.5*0.5*0.25 + 0.5*0.05.
    maps = np.array([[[0.9, 0.6, 0.9, 0.7, 0.2, 0.1]]])
    assert metrics.au_pro(masks, maps) == pytest.approx((0.0625 + 0.025) / 0.3)


def test_au_pro_regions_are_eight_connected():
    # A = two diagonal neighbours (one region with 8-connectivity), B = one pixel. Top scores: A's first pixel and B;
    # normals tie in the middle; A's second pixel lowest. 8-connected: PRO = (1/2 + 1)/2 = 0.75 (4-connected: 2/3).
    masks = np.zeros((1, 5, 5), bool)
    masks[0, 0, 0] = masks[0, 1, 1] = masks[0, 4, 4] = True
    maps = np.full(masks.shape, 0.5)
    maps[0, 0, 0] = maps[0, 4, 4] = 1.0
    maps[0, 1, 1] = 0.0
    assert metrics.au_pro(masks, maps) == pytest.approx(0.75)


def test_au_pro_counts_normal_images_and_regions_over_the_set():
    masks = np.zeros((2, 4, 4), bool)
    masks[0, :2, :2] = True
    maps = masks.astype(float) * 0.9
    assert metrics.au_pro(masks, maps) == pytest.approx(1.0)
    maps[1] = 1.0  # a normal image scoring above the defect: FPR 16/28 before any region pixel
    assert metrics.au_pro(masks, maps) == pytest.approx(0.0)
    # Two regions in two images, one found perfectly and one never: PRO is the mean over regions.
    masks[1, 3, 3] = True
    maps = masks.astype(float)
    maps[1, 3, 3] = -1.0
    assert metrics.au_pro(masks, maps) == pytest.approx(0.5)


def test_au_pro_accepts_lists_masks_in_several_dtypes_and_returns_none_without_regions():
    rng = np.random.default_rng(3)
    masks = rng.random((3, 8, 8)) < 0.2
    maps = rng.random((3, 8, 8))
    expected = metrics.au_pro(masks, maps)
    assert metrics.au_pro(list(masks.astype(np.uint8) * 255), list(maps)) == pytest.approx(expected)
    soft = np.where(masks, 0.6, 0.4)  # float masks are binarised at 0.5
    assert metrics.au_pro(soft, maps) == pytest.approx(expected)
    assert metrics.au_pro(np.zeros_like(masks), maps) is None
    assert metrics.au_pro(np.ones_like(masks), maps) is None


# ------------------------------------------------------------------------------------------------------------------
# RD4AD per-image PRO
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(3))
def test_rd4ad_pro_matches_rd4ad_loop(seed):
    rng = np.random.default_rng(100 + seed)
    checked = 0
    for _ in range(6):
        masks, maps = random_case(rng, max_images=4, max_side=24)
        reference, per_image = rd4ad_pro_loop(masks, maps)
        if None in per_image:  # degenerate images: tested separately
            continue
        ours = rd4ad_pro(masks, maps)
        if reference is None:
            assert ours is None
        else:
            assert ours == pytest.approx(reference, abs=1e-6)
            checked += 1
    assert checked >= 2


def test_rd4ad_pro_matches_loop_with_fewer_thresholds_and_smooth_maps():
    rng = np.random.default_rng(7)
    masks = np.zeros((3, 32, 32), bool)
    masks[0, 5:12, 5:15] = True
    masks[0, 20:22, 20:30] = True
    masks[1, 12, 12] = masks[1, 13, 13] = True  # diagonal neighbours: one region
    maps = ndimage.gaussian_filter(masks.astype(float) + 0.5 * rng.random(masks.shape), (0, 2, 2))
    for num_thresholds in (200, 37):
        reference, _ = rd4ad_pro_loop(masks, maps, num_thresholds)
        assert rd4ad_pro(masks, maps, num_thresholds) == pytest.approx(reference, abs=1e-6)


def test_rd4ad_pro_degenerate_images():
    masks = np.zeros((1, 6, 6), bool)
    masks[0, 2:4, 2:4] = True
    # Perfect map: every kept FPR is 0 (RD4AD divides 0 by 0); we return the largest kept PRO.
    assert rd4ad_pro(masks, masks.astype(float)) == pytest.approx(1.0)
    assert rd4ad_pro(masks, np.full(masks.shape, 0.3)) == 0.0  # constant map (RD4AD's arange fails)
    # Normal pixels all above the defect: every FPR >= 0.3, nothing kept.
    assert rd4ad_pro(masks, 1.0 - masks) == 0.0
    assert rd4ad_pro(np.zeros_like(masks), masks.astype(float)) is None  # no anomalous image
    assert rd4ad_pro(np.ones_like(masks), masks.astype(float)) is None  # no normal pixel to count FPR


# ------------------------------------------------------------------------------------------------------------------
# Real bottle masks (skipped without the data)
# ------------------------------------------------------------------------------------------------------------------
def test_bottle_masks_with_realistic_maps(bottle_root):
    bottle = Path(bottle_root) / "bottle"
    masks = []
    for defect_dir in sorted((bottle / "test").iterdir()):
        for image_path in sorted(defect_dir.glob("*.png")):
            mask_path = bottle / "ground_truth" / defect_dir.name / f"{image_path.stem}_mask.png"
            masks.append(np.asarray(Image.open(mask_path)) if mask_path.exists() else np.zeros((256, 256), np.uint8))
    masks = np.stack(masks)
    rng = np.random.default_rng(0)
    maps = (ndimage.gaussian_filter(masks / 255.0, (0, 4, 4))
            + ndimage.gaussian_filter(rng.normal(size=masks.shape), (0, 4, 4))).astype(np.float32)
    assert metrics.au_pro(masks, maps) == pytest.approx(mvtec_au_pro(masks > 127, maps), abs=1e-6)
    anomalous = np.flatnonzero(masks.reshape(len(masks), -1).max(axis=1))[:4]
    reference, _ = rd4ad_pro_loop(masks[anomalous] > 127, maps[anomalous])
    assert rd4ad_pro(masks[anomalous], maps[anomalous]) == pytest.approx(reference, abs=1e-6)


# ------------------------------------------------------------------------------------------------------------------
# AUROC, thresholds, precision/recall/F1, evaluate
# ------------------------------------------------------------------------------------------------------------------
def test_image_auroc_values_and_undefined_cases():
    assert metrics.image_auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert metrics.image_auroc([True, False, True], [0.2, 0.2, 0.9]) == pytest.approx(0.75)  # tie: half credit
    assert metrics.image_auroc([1, 1, 1], [0.1, 0.2, 0.3]) is None
    assert metrics.image_auroc([0, 0], [0.1, 0.2]) is None


def test_pixel_auroc_values_binarisation_and_undefined_cases():
    masks = np.array([[[1, 1], [0, 0]]], dtype=np.uint8) * 255
    maps = np.array([[[0.9, 0.4], [0.5, 0.1]]], dtype=np.float32)
    assert metrics.pixel_auroc(masks, maps) == pytest.approx(0.75)  # pairs: 0.9>0.5, 0.9>0.1, 0.4<0.5, 0.4>0.1
    assert metrics.pixel_auroc(np.where(masks > 0, 0.7, 0.2), maps) == pytest.approx(0.75)
    rng = np.random.default_rng(0)
    masks, maps = rng.random((4, 9, 9)) < 0.2, np.round(rng.random((4, 9, 9)), 1)
    assert metrics.pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()))
    assert metrics.pixel_auroc(np.zeros((1, 2, 2)), np.ones((1, 2, 2))) is None


def test_precision_recall_f1_hand_example():
    labels = [1, 1, 0, 0, 1]
    scores = [0.9, 0.4, 0.6, 0.1, 0.7]
    result = metrics.precision_recall_f1(labels, scores, threshold=0.6)  # 0.6 itself counts as defective
    assert (result["tp"], result["fp"], result["fn"], result["tn"]) == (2, 1, 1, 1)
    assert result["precision"] == pytest.approx(2 / 3)
    assert result["recall"] == pytest.approx(2 / 3)
    assert result["f1"] == pytest.approx(2 / 3)
    assert result["threshold"] == 0.6
    nothing_flagged = metrics.precision_recall_f1(labels, scores, threshold=5.0)
    assert nothing_flagged["precision"] == nothing_flagged["recall"] == nothing_flagged["f1"] == 0.0
    all_flagged = metrics.precision_recall_f1(labels, scores, threshold=0.0)
    assert all_flagged["precision"] == pytest.approx(0.6) and all_flagged["recall"] == 1.0
    assert all_flagged["f1"] == pytest.approx(0.75)


def test_calibrate_thresholds():
    assert metrics.calibrate_threshold(np.arange(101), 0.99) == pytest.approx(99.0)
    assert metrics.calibrate_threshold([1.0, 3.0], 0.5) == pytest.approx(2.0)
    maps = np.arange(200, dtype=float).reshape(2, 10, 10)
    assert metrics.calibrate_threshold(maps, 0.5) == pytest.approx(99.5)  # every pixel of every map pooled
    with pytest.raises(UserError):
        metrics.calibrate_threshold([], 0.9)
    with pytest.raises(UserError):
        metrics.calibrate_threshold([1.0, 2.0], 1.5)
    with pytest.raises(UserError):
        metrics.calibrate_threshold([1.0, np.nan], 0.5)


def test_evaluate_records_why_a_metric_is_missing():
    masks = np.zeros((3, 4, 4), bool)
    masks[1, 1:3, 1:3] = True
    maps = masks + np.linspace(0, 0.1, 48).reshape(3, 4, 4)
    result = metrics.evaluate([0, 1, 0], maps.max(axis=(1, 2)), masks, maps)
    assert result["image_auroc"] == 1.0 and result["pixel_auroc"] == 1.0
    assert result["au_pro"] == pytest.approx(1.0) and rd4ad_pro(masks, maps) == pytest.approx(1.0)
    assert result["notes"] == {}
    result = metrics.evaluate([0, 0, 0], [0.1, 0.2, 0.3], protocols=("image_auroc", "au_pro"))
    assert result["image_auroc"] is None and result["au_pro"] is None
    assert "one class" in result["notes"]["image_auroc"] and "masks" in result["notes"]["au_pro"]
    with pytest.raises(UserError, match="unknown metric"):
        metrics.evaluate([0, 1], [0.1, 0.2], protocols=("f1",))


# ------------------------------------------------------------------------------------------------------------------
# Input validation
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("function", [metrics.au_pro, rd4ad_pro, metrics.pixel_auroc])
def test_map_validation(function):
    masks = np.zeros((3, 4, 4), bool)
    masks[0, 0, 0] = True
    maps = np.random.default_rng(0).random((3, 4, 4))
    with pytest.raises(UserError, match="shape"):
        function(masks, maps[:, :3])
    with pytest.raises(UserError, match="shape"):
        function(masks[0], maps[0])
    maps[2, 1, 1] = np.nan
    with pytest.raises(UserError, match=r"anomaly map 2 \(test/crack/002.png\) contains NaN or Inf"):
        function(masks, maps, names=["a.png", "b.png", "test/crack/002.png"])
    maps[2, 1, 1] = -np.inf
    with pytest.raises(UserError, match="anomaly map 2 contains NaN or Inf"):
        function(masks, maps)


def test_label_and_option_validation():
    with pytest.raises(UserError, match="shape"):
        metrics.image_auroc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(UserError, match="0 \\(normal\\) or 1"):
        metrics.image_auroc([0, 2], [0.1, 0.2])
    with pytest.raises(UserError, match=r"image score 1 \(b.png\) is NaN"):
        metrics.precision_recall_f1([0, 1], [0.1, np.nan], 0.5, names=["a.png", "b.png"])
    masks, maps = np.ones((1, 2, 2), bool), np.ones((1, 2, 2))
    for limit in (0.0, 1.5):
        with pytest.raises(UserError, match="integration_limit"):
            metrics.au_pro(masks, maps, integration_limit=limit)
    with pytest.raises(UserError, match="num_thresholds"):
        rd4ad_pro(masks, maps, num_thresholds=0)
