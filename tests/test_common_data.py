"""MVTec IO, transforms, splits, synthetic data and the dataset checker."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from common.core.errors import UserError
from common.data import images, readers, splits, synthetic
from common.data.check import check_class
from common.data.dataset import ImageDataset, has_masks
from common.data.readers import mvtec
from common.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from conftest import REPO_ROOT


# -- categories ---------------------------------------------------------------------------------------------
def test_groups_and_suggestion():
    assert len(readers.resolve_classes("all")) == 15
    assert readers.resolve_classes("textures") == list(mvtec.TEXTURES)
    assert readers.resolve_classes("bottle,wood") == ["bottle", "wood"]
    with pytest.raises(UserError, match="did you mean 'metal_nut'"):
        readers.resolve_classes("metalnut")


# -- reader -------------------------------------------------------------------------------------------------
def test_reader_on_synthetic(synthetic_root):
    train = mvtec.train_samples(synthetic_root, "bottle")
    test = mvtec.test_samples(synthetic_root, "bottle")
    assert len(train) == 12 and all(s.label == 0 for s in train)
    assert [s.path for s in train] == sorted(s.path for s in train)
    assert len(test) == 4 + 3 * 2
    assert [s.defect_type for s in test] == ["blob"] * 2 + ["good"] * 4 + ["patch"] * 2 + ["scratch"] * 2
    for s in test:
        assert (s.mask_path is not None) == (s.label == 1)
        if s.mask_path:
            assert os.path.basename(s.mask_path) == os.path.basename(s.path).replace(".png", "_mask.png")
    assert has_masks(test)
    assert readers.classes_for("all", synthetic_root) == ["bottle", "carpet"]
    # --data_dir may point at the class folder itself
    assert len(mvtec.train_samples(os.path.join(synthetic_root, "bottle"), "bottle")) == 12


def test_dataset_items_and_masks(synthetic_root):
    test = mvtec.test_samples(synthetic_root, "bottle")
    dataset = ImageDataset(test, Preprocess(resize=32))
    image, mask, label, index = dataset[0]
    assert image.shape == (3, 32, 32) and image.dtype == np.float32
    assert mask.shape == (1, 32, 32) and set(np.unique(mask)) <= {0.0, 1.0}
    assert label == 1 and index == 0 and mask.sum() > 0
    masks = dataset.masks()
    assert masks.shape == (10, 32, 32)
    assert (masks.reshape(10, -1).any(1) == dataset.labels.astype(bool)).all()
    np.testing.assert_array_equal(masks[0], mask[0] > 0)


def test_unknown_and_missing(synthetic_root, tmp_path):
    with pytest.raises(UserError, match="did you mean 'bottle'"):
        readers.classes_for("botle", synthetic_root)
    with pytest.raises(UserError, match="data folder not found"):
        readers.classes_for("bottle", str(tmp_path / "nope"))
    (tmp_path / "empty" / "train" / "good").mkdir(parents=True)
    with pytest.raises(UserError, match="no training images"):
        mvtec.train_samples(str(tmp_path), "empty")


def test_custom_folder_without_masks(synthetic_root, tmp_path):
    shutil.copytree(os.path.join(synthetic_root, "bottle", "test"), tmp_path / "test")
    samples = mvtec.folder_samples(str(tmp_path / "test"))
    assert len(samples) == 10 and not has_masks(samples)
    dataset = ImageDataset(samples, Preprocess(resize=32))
    assert dataset.masks().sum() == 0


def test_missing_mask_is_an_error(synthetic_root, tmp_path):
    shutil.copytree(os.path.join(synthetic_root, "bottle"), tmp_path / "bottle")
    os.remove(tmp_path / "bottle" / "ground_truth" / "blob" / "001_mask.png")
    with pytest.raises(UserError, match="no mask for .*blob/001.png"):
        mvtec.test_samples(str(tmp_path), "bottle")


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "LA"])
def test_any_image_mode_becomes_rgb(tmp_path, mode):
    rgb = np.random.default_rng(0).integers(0, 255, (20, 24, 3), dtype=np.uint8)
    image = Image.fromarray(rgb)
    if mode == "I;16":
        image = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)
    else:
        image = image.convert(mode)
    path = tmp_path / "x.png"
    image.save(path)
    out = images.open_image(str(path))
    assert out.mode == "RGB" and out.size == (24, 20)
    if mode in ("L", "I;16"):
        arr = np.asarray(out)
        assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()


def test_unreadable_image_and_mask_size_mismatch(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(UserError, match="cannot read image .*bad.png"):
        images.open_image(str(bad))
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(tmp_path / "m.png")
    with pytest.raises(UserError, match="is 12x10 but its image is 16x16"):
        images.open_mask(str(tmp_path / "m.png"), (16, 16))


# -- transforms ---------------------------------------------------------------------------------------------
def test_pil_pipeline_matches_a_direct_computation():
    rng = np.random.default_rng(1)
    pil = Image.fromarray(rng.integers(0, 255, (100, 100, 3), dtype=np.uint8))
    out = Preprocess(resize=40).image(pil)
    expected = np.asarray(pil.resize((40, 40), Image.BILINEAR), dtype=np.float32) / 255.0
    expected = ((expected - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    raw = Preprocess(resize=40, normalize=False, backend="cv2").image(pil)
    assert raw.min() >= 0 and raw.max() <= 1
    # PIL antialiases when downscaling, OpenCV's INTER_LINEAR does not: the backends differ
    assert np.abs(raw - np.asarray(pil.resize((40, 40), Image.BILINEAR)).transpose(2, 0, 1) / 255.0).max() > 0.01


def test_keep_aspect_pre_resize_and_crop():
    pil = Image.fromarray(np.arange(60 * 90 * 3, dtype=np.uint8).reshape(60, 90, 3))
    pre = Preprocess(resize=30, crop=30, keep_aspect=True, normalize=False)
    resized = pre.resize_image(pil)
    expected = np.asarray(pil.resize((45, 30), Image.BILINEAR))[:, 8:38]  # torchvision: round((45-30)/2) = 8
    np.testing.assert_array_equal(resized, expected)
    two_step = Preprocess(resize=30, crop=30, pre_resize=40, keep_aspect=True).resize_image(pil)
    first = pil.resize((60, 40), Image.BILINEAR)
    np.testing.assert_array_equal(two_step, np.asarray(first.resize((45, 30), Image.BILINEAR))[:, 8:38])


def test_mask_rule_binarises_after_resize():
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 2:6] = 255
    pil = Image.fromarray(mask)
    soft = np.asarray(Image.fromarray(mask.astype(np.float32) / 255).resize((5, 5), Image.BILINEAR))
    for threshold in (0.5, 0.5995):
        out = Preprocess(resize=5, mask_threshold=threshold).mask(pil)
        np.testing.assert_array_equal(out, soft > threshold)
    assert Preprocess(resize=5, mask_interpolation="nearest").mask(pil).dtype == bool


# -- splits -------------------------------------------------------------------------------------------------
def test_splits():
    items = list(range(25))
    train, val = splits.random_split(items, 0.1, seed=42)
    assert len(val) == 2 and sorted(train + val) == items
    assert splits.random_split(items, 0.1, seed=42) == (train, val)
    assert splits.random_split(items, 0.1, seed=1) != (train, val)
    with pytest.raises(UserError):
        splits.random_split([1], 0.1)


# -- synthetic ----------------------------------------------------------------------------------------------
def _read_tree(root):
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            out[os.path.relpath(path, root)] = np.asarray(Image.open(path))
    return out


def test_synthetic_is_deterministic_and_masks_mark_the_defects(tmp_path):
    a = _read_tree(synthetic.make_class(str(tmp_path / "a"), "carpet", size=32, n_train=2, n_test_good=1,
                                        n_test_defect=1, seed=3))
    b = _read_tree(synthetic.make_class(str(tmp_path / "b"), "carpet", size=32, n_train=2, n_test_good=1,
                                        n_test_defect=1, seed=3))
    c = _read_tree(synthetic.make_class(str(tmp_path / "c"), "carpet", size=32, n_train=2, n_test_good=1,
                                        n_test_defect=1, seed=4))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert any((a[k] != c[k]).any() for k in a)
    for key, mask in a.items():
        if key.startswith("ground_truth"):
            assert set(np.unique(mask)) == {0, 255}
            assert a[key.replace("ground_truth", "test").replace("_mask", "")].shape == (32, 32, 3)


def test_synthetic_cli(tmp_path):
    out = subprocess.run([sys.executable, "-m", "common.synthetic", "--out", str(tmp_path), "--classes", "grid",
                          "--size", "32", "--n_train", "3"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert len(os.listdir(tmp_path / "grid" / "train" / "good")) == 3


# -- dataset checker ----------------------------------------------------------------------------------------
def test_check_dataset_reports_problems(synthetic_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(os.path.join(synthetic_root, "bottle"), root / "bottle")
    summary, problems = check_class(str(root), "bottle")
    assert problems == [] and summary["train"] == 12 and summary["masks"] == 6
    (root / "bottle" / "train" / "good" / "broken.png").write_bytes(b"garbage")
    os.remove(root / "bottle" / "ground_truth" / "blob" / "000_mask.png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "bottle" / "ground_truth" / "patch" / "000_mask.png")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(root / "bottle" / "ground_truth" / "patch" / "099_mask.png")
    Image.open(root / "bottle" / "test" / "good" / "000.png").convert("RGBA").save(
        root / "bottle" / "test" / "good" / "000.png")
    cli = subprocess.run([sys.executable, "-m", "common.check_dataset", str(root)], cwd=REPO_ROOT,
                         capture_output=True, text=True)
    assert cli.returncode == 1
    text = cli.stdout
    assert "unreadable image" in text and "broken.png" in text
    assert "missing mask for" in text and "blob/000.png" in text
    assert "mask/image size mismatch" in text and "extra mask" in text and "099_mask.png" in text
    assert "RGBA (1)" in text
    unknown = subprocess.run([sys.executable, "-m", "common.check_dataset", str(root), "--cls", "botle"],
                             cwd=REPO_ROOT, capture_output=True, text=True)
    assert unknown.returncode == 2 and "did you mean 'bottle'" in unknown.stderr
    assert "Traceback" not in unknown.stderr


def test_check_dataset_real_bottle(bottle_root):
    summary, problems = check_class(bottle_root, "bottle")
    assert (summary["train"], summary["test_good"], summary["test_defect"], summary["masks"]) == (209, 20, 63, 63)
    assert problems == []
