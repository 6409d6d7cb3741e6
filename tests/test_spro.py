"""MVTec LOCO AD metrics (common.metrics.spro) against the plain re-statement of MVTec's LOCO evaluator."""
from collections import namedtuple

import numpy as np
import pytest

from common.metrics import spro
from metric_references import loco_classification_auc_roc, loco_initial_thresholds, loco_reference

Channel = namedtuple("Channel", "mask saturation_threshold relative_saturation defect_name")
TYPES = ("good", "logical_anomalies", "structural_anomalies")


def synthetic_class(seed, n=12, height=24, width=32, levels=None):
    """Maps, channels and types: good images without channels, anomalous ones with 1-3 channels, relative and
    absolute saturations, defects that raise the scores; ``levels`` quantises the scores (ties)."""
    rng = np.random.default_rng(seed)
    maps, channels, types = [], [], []
    for i in range(n):
        kind = TYPES[i % 3]
        amap = rng.random((height, width)).astype(np.float32)
        image_channels = []
        if kind != "good":
            for c in range(1 + i % 3):
                mask = np.zeros((height, width), bool)
                y, x = rng.integers(0, height - 6), rng.integers(0, width - 6)
                mask[y:y + rng.integers(2, 7), x:x + rng.integers(2, 7)] = True
                amap[mask] += rng.random() * 0.8
                if (i + c) % 2:
                    image_channels.append(Channel(mask, float(rng.choice([0.3, 0.5, 1.0])), True, f"r{c}"))
                else:
                    image_channels.append(Channel(mask, int(rng.integers(1, 30)), False, f"a{c}"))
        if levels:
            amap = np.round(amap * levels).astype(np.float32) / levels
        maps.append(amap)
        channels.append(image_channels)
        types.append(kind)
    return maps, channels, types


def as_reference_channels(channels):
    return [[(c.mask, c.saturation_threshold, c.relative_saturation) for c in image] for image in channels]


def assert_same(ours, reference):
    assert ours["num_thresholds"] == reference["num_thresholds"]
    for subset in ("logical_anomalies", "structural_anomalies", "mean"):
        for limit in spro.INTEGRATION_LIMITS:
            assert ours["au_spro"][subset][limit] == pytest.approx(reference["au_spro"][subset][limit], abs=1e-6)
    for subset in ("logical_anomalies", "structural_anomalies", "mean", "all"):
        assert ours["image_auroc"][subset] == pytest.approx(reference["image_auroc"][subset], abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_reference_on_synthetic_maps(seed):
    maps, channels, types = synthetic_class(seed)
    ours = spro.loco_metrics(maps, channels, types)
    assert_same(ours, loco_reference(maps, as_reference_channels(channels), types))
    values = [v for subset in ours["au_spro"].values() for v in subset.values()]
    assert all(0 <= v <= 1 for v in values) and len(set(values)) > 3


def test_equals_reference_with_tied_scores():
    # 400 score levels: many tied pixels, but no score fills 2% of the pixels, so the initial thresholds are distinct
    maps, channels, types = synthetic_class(5, levels=400)
    initial = loco_initial_thresholds(maps, np.random.default_rng(0))
    assert len(set(initial)) == len(initial)
    assert sum(len(np.unique(m)) for m in maps) < sum(m.size for m in maps)
    assert_same(spro.loco_metrics(maps, channels, types), loco_reference(maps, as_reference_channels(channels), types))


def test_repeated_initial_thresholds_are_kept_once():
    # 8 score levels: the official code would stop on its assertion; ours equals it fed the thresholds kept once
    maps, channels, types = synthetic_class(6, levels=8)
    initial = loco_initial_thresholds(maps, np.random.default_rng(0))
    unique = list(dict.fromkeys(initial))
    assert len(unique) < len(initial)
    reference = loco_reference(maps, as_reference_channels(channels), types, initial_thresholds=unique)
    assert_same(spro.loco_metrics(maps, channels, types), reference)


def test_seeded_subsampling_repeats_and_equals_reference():
    maps, channels, types = synthetic_class(3)
    limit = 1000                                          # 12 maps of 768 scores: 83 drawn per map
    first = spro.loco_metrics(maps, channels, types, seed=7, max_num_scores=limit)
    again = spro.loco_metrics(maps, channels, types, seed=7, max_num_scores=limit)
    assert first == again
    reference = loco_reference(maps, as_reference_channels(channels), types, rng=np.random.default_rng(7),
                               max_num_scores=limit)
    assert_same(first, reference)
    # the sample does change the initial thresholds (so the seed is what makes the result repeat)
    a = spro.initial_thresholds(maps, np.random.default_rng(7), limit)
    b = spro.initial_thresholds(maps, np.random.default_rng(8), limit)
    assert a != b and a[0] == b[0] and a[-1] == b[-1]


def test_perfect_map_gives_one():
    maps, channels, types = synthetic_class(4, n=6)
    perfect = []
    for i, image_channels in enumerate(channels):
        # distinct image scores (the official ROC draws a diagonal through tied ones), defects above every normal
        amap = np.full((24, 32), i * 1e-3, np.float32)
        for c in image_channels:
            amap[c.mask] = 1.0 + i * 1e-3
        perfect.append(amap)
    result = spro.loco_metrics(perfect, channels, types)
    for subset in result["au_spro"].values():
        assert all(v == pytest.approx(1.0) for v in subset.values())
    assert all(v == 1.0 for v in result["image_auroc"].values())


def test_map_constant_in_the_defect_known_values():
    # normal pixels: 20 % score 1.0, the rest 0.0; the defect scores 0.5. The curve is (0, 0) -> (0.2, 0) ->
    # (0.2, 1) -> (1, 1), so AU-sPRO@L = (L - 0.2) / L for L > 0.2, else 0.
    h, w = 10, 10
    mask = np.zeros((h, w), bool)
    mask[:4, :5] = True                                   # 20 defect pixels, 80 normal
    bad = np.zeros((h, w), np.float32)
    bad[mask] = 0.5
    bad.ravel()[np.flatnonzero(~mask.ravel())[:16]] = 1.0  # 16 of 80 normal pixels
    good = np.zeros((h, w), np.float32)
    good.ravel()[:20] = 1.0                               # 20 of 100
    maps = [good, bad, bad]
    channels = [[], [Channel(mask, 1.0, True, "x")], [Channel(mask, 5, False, "y")]]
    result = spro.loco_metrics(maps, channels, ["good", "logical_anomalies", "structural_anomalies"])
    for subset in result["au_spro"].values():
        assert subset[0.01] == subset[0.05] == subset[0.1] == 0.0
        assert subset[0.3] == pytest.approx(0.1 / 0.3)
        assert subset[1.0] == pytest.approx(0.8)


def test_saturation_area():
    mask = np.zeros((5, 5), bool)
    mask[:1, :] = True                                    # area 5
    assert spro.saturation_area(Channel(mask, 0.5, True, "")) == 2   # int(2.5), truncated as official
    assert spro.saturation_area(Channel(mask, 3, False, "")) == 3
    assert spro.saturation_area(Channel(mask, 50, False, "")) == 5   # capped at the defect area


def test_image_auroc_tie_behaviour():
    # one good and one anomalous image with the same score: the official curve gives 1.0 (sklearn 0.5)
    assert spro.classification_auroc([0.5], [0.5]) == 1.0 == loco_classification_auc_roc([0.5], [0.5])
    rng = np.random.default_rng(0)
    for _ in range(20):
        good = np.round(rng.random(15) * 4) / 4
        bad = np.round(rng.random(11) * 4 + 0.5) / 4
        assert spro.classification_auroc(good, bad) == pytest.approx(
            loco_classification_auc_roc(good.tolist(), bad.tolist()), abs=1e-12)


def test_maps_back_at_the_image_size():
    from common.data.transforms import Preprocess
    from common.evaluation.loco import map_to_image

    amap = np.arange(16, dtype=np.float32).reshape(4, 4) + 1
    # resized to 8x8 then centre-cropped to 4: the map goes back into the middle, the border holds its minimum
    back = map_to_image(amap, Preprocess(resize=8, crop=4), (8, 8))
    assert back.dtype == np.float32 and back.shape == (8, 8)
    assert np.array_equal(back[2:6, 2:6], amap) and np.all(back[:2] == 1) and np.all(back[:, 6:] == 1)
    # no crop: a bilinear resize to (width, height)
    wide = map_to_image(np.ones((4, 4), np.float32), Preprocess(resize=4), (10, 6))
    assert wide.shape == (6, 10) and np.allclose(wide, 1)
