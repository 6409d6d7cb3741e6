"""Readers of MVTec LOCO AD, VisA, KolektorSDD, KolektorSDD2 and BTech (issue 19) and the synthetic layout writers.

Each format is checked twice: on files written here by hand in the published layout with values known in advance
(the independent reference), and on the output of ``common.data.synthetic_layouts`` whose files are re-read here
with Pillow (not through the reader) to get the expected labels, masks and channel values.
"""
import json
import os
import pickle
import shutil

import numpy as np
import pytest
from PIL import Image

from common.core.errors import UserError
from common.data import synthetic_layouts as layouts
from common.data.readers import btech, kolektor, mvtec_loco, visa
from common.data.samples import GOOD, MASK_NONZERO, open_sample_image, open_sample_mask


def save(path, array):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(str(path))


def rgb(height, width, value=100):
    return np.full((height, width, 3), value, np.uint8)


def block(height, width, value, rows, cols):
    out = np.zeros((height, width), np.uint8)
    out[rows, cols] = value
    return out


def raw(path):
    """A file's pixel values as stored (no mode conversion)."""
    with Image.open(path) as image:
        return np.array(image)


def union(sample):
    return np.asarray(open_sample_mask(sample))


def names(samples):
    return [s.name for s in samples]


def test_formats_describe_themselves():
    assert mvtec_loco.FORMAT.name == "mvtec_loco" and len(mvtec_loco.FORMAT.classes) == 5
    assert mvtec_loco.FORMAT.validation is not None
    assert visa.FORMAT.name == "visa" and len(visa.FORMAT.classes) == 12
    assert kolektor.FORMAT.name == "kolektor" and kolektor.FORMAT.folds == (0, 1, 2)
    assert kolektor.FORMAT_KSDD2.name == "kolektor2" and kolektor.FORMAT_KSDD2.folds == ()
    assert btech.FORMAT.classes == ("01", "02", "03")
    for fmt in (mvtec_loco.FORMAT, visa.FORMAT, kolektor.FORMAT, kolektor.FORMAT_KSDD2, btech.FORMAT):
        assert fmt.description and fmt.kind == "industrial"
        if fmt.validation is None:
            assert fmt.validation_samples("unused", "unused") == []


# -- MVTec LOCO AD --------------------------------------------------------------------------------------------------
H, W = 8, 10   # LOCO images are not square
LOGICAL_0 = block(H, W, 255, slice(1, 3), slice(2, 5))     # channel 000 of logical_anomalies/000
LOGICAL_1 = block(H, W, 7, slice(2, 7), slice(4, 9))       # channel 001, overlapping channel 000
STRUCTURAL = block(H, W, 254, slice(0, 2), slice(0, 2))
CONFIG = """[
  {"defect_name": "missing_pin", "pixel_value": 255, "saturation_threshold": 1.0, "relative_saturation": true},
  {"defect_name": "extra_pin", "pixel_value": 7, "saturation_threshold": 4, "relative_saturation": false},
  {"defect_name": "scratch", "pixel_value": 254, "saturation_threshold": 0.25, "relative_saturation": true}
]"""


@pytest.fixture
def loco(tmp_path):
    """A hand-written pushpins object: 2 train, 1 validation, 1 good, 1 logical (2 channels), 1 structural."""
    cls = tmp_path / "pushpins"
    for path in ("train/good/000.png", "train/good/001.png", "validation/good/000.png", "test/good/000.png",
                 "test/logical_anomalies/000.png", "test/structural_anomalies/003.png"):
        save(cls / path, rgb(H, W))
    save(cls / "ground_truth/logical_anomalies/000/000.png", LOGICAL_0)
    save(cls / "ground_truth/logical_anomalies/000/001.png", LOGICAL_1)
    save(cls / "ground_truth/structural_anomalies/003/000.png", STRUCTURAL)
    (cls / "defects_config.json").write_text(CONFIG)
    return str(tmp_path)


def test_loco_lists_the_published_layout(loco):
    assert mvtec_loco.list_classes(loco) == ["pushpins"]
    train = mvtec_loco.train_samples(loco, "pushpins")
    assert names(train) == ["good/000", "good/001"] and {s.label for s in train} == {0}
    validation = mvtec_loco.validation_samples(loco, "pushpins")
    assert names(validation) == ["good/000"] and "validation" in validation[0].path
    assert names(mvtec_loco.FORMAT.validation_samples(loco, "pushpins")) == ["good/000"]
    test = mvtec_loco.test_samples(loco, "pushpins")
    assert names(test) == ["good/000", "logical_anomalies/000", "structural_anomalies/003"]
    assert [s.label for s in test] == [0, 1, 1]
    assert [s.defect_type for s in test] == [GOOD, "logical_anomalies", "structural_anomalies"]
    assert {s.mask_rule for s in test} == {MASK_NONZERO}
    assert test[0].mask_paths == ()
    assert [os.path.relpath(p, loco) for p in test[1].mask_paths] == [
        "pushpins/ground_truth/logical_anomalies/000/000.png", "pushpins/ground_truth/logical_anomalies/000/001.png"]
    np.testing.assert_array_equal(union(test[1]), ((LOGICAL_0 > 0) | (LOGICAL_1 > 0)) * 255)
    np.testing.assert_array_equal(union(test[2]), (STRUCTURAL > 0) * 255)
    # the class folder itself may be given as the root
    assert names(mvtec_loco.train_samples(os.path.join(loco, "pushpins"), "pushpins")) == ["good/000", "good/001"]


def test_loco_defects_config_and_channels(loco):
    defects = mvtec_loco.read_defects_config(os.path.join(loco, "pushpins"))
    assert sorted(defects) == [7, 254, 255]
    assert defects[255] == mvtec_loco.Defect("missing_pin", 255, 1.0, True)
    assert type(defects[255].saturation_threshold) is float and type(defects[7].saturation_threshold) is int
    test = mvtec_loco.test_samples(loco, "pushpins")
    assert mvtec_loco.defect_channels(test[0], defects) == []
    first, second = mvtec_loco.defect_channels(test[1], defects)
    np.testing.assert_array_equal(first.mask, LOGICAL_0 > 0)
    assert first.mask.dtype == bool and tuple(first[1:]) == (1.0, True, "missing_pin")
    np.testing.assert_array_equal(second.mask, LOGICAL_1 > 0)
    assert tuple(second[1:]) == (4, False, "extra_pin")
    (only,) = mvtec_loco.defect_channels(test[2], defects, image_size=(W, H))
    assert tuple(only[1:]) == (0.25, True, "scratch") and only.mask.sum() == 4


@pytest.mark.parametrize("entry, fragment", [
    ('{"defect_name": "a", "pixel_value": 3, "saturation_threshold": 1, "relative_saturation": true}', "1.0"),
    ('{"defect_name": "a", "pixel_value": 3, "saturation_threshold": 1.5, "relative_saturation": true}', "(0, 1]"),
    ('{"defect_name": "a", "pixel_value": 3, "saturation_threshold": 40.0, "relative_saturation": false}',
     "JSON integer"),
    ('{"defect_name": "a", "pixel_value": 0, "saturation_threshold": 40, "relative_saturation": false}', "1..255"),
    ('{"defect_name": "a", "pixel_value": 3, "relative_saturation": false}', "missing saturation_threshold"),
])
def test_loco_config_type_rules(loco, entry, fragment):
    path = os.path.join(loco, "pushpins", "defects_config.json")
    with open(path, "w") as handle:
        handle.write(f'[{{"defect_name": "ok", "pixel_value": 9, "saturation_threshold": 5, '
                     f'"relative_saturation": false}}, {entry}]')
    with pytest.raises(UserError) as info:
        mvtec_loco.read_defects_config(os.path.join(loco, "pushpins"))
    message = str(info.value)
    assert "\n" not in message and path in message and "entry 1" in message and fragment in message


@pytest.mark.parametrize("values, fragment", [
    (np.zeros((H, W)), "no defect pixel"),
    (block(H, W, 255, slice(0, 2), slice(0, 2)) + block(H, W, 7, slice(4, 5), slice(4, 5)), "several"),
    (block(H, W, 9, slice(0, 2), slice(0, 2)), "pixel value 9"),
])
def test_loco_bad_channels_name_the_file(loco, values, fragment):
    channel = os.path.join(loco, "pushpins", "ground_truth", "logical_anomalies", "000", "001.png")
    save(channel, values)
    defects = mvtec_loco.read_defects_config(os.path.join(loco, "pushpins"))
    sample = mvtec_loco.test_samples(loco, "pushpins")[1]
    with pytest.raises(UserError) as info:
        mvtec_loco.defect_channels(sample, defects)
    assert "\n" not in str(info.value) and channel in str(info.value) and fragment in str(info.value)


def test_loco_unknown_test_folder_and_missing_ground_truth(loco):
    cls = os.path.join(loco, "pushpins")
    save(os.path.join(cls, "test", "broken", "000.png"), rgb(H, W))
    with pytest.raises(UserError, match="unknown test folder .*broken"):
        mvtec_loco.test_samples(loco, "pushpins")
    shutil.rmtree(os.path.join(cls, "test", "broken"))
    shutil.rmtree(os.path.join(cls, "ground_truth", "structural_anomalies", "003"))
    with pytest.raises(UserError, match="no ground truth for .*structural_anomalies.003.png"):
        mvtec_loco.test_samples(loco, "pushpins")


def test_loco_writer(tmp_path):
    root = layouts.write_mvtec_loco(str(tmp_path), ("juice_bottle",), size=64, n_train=3, n_validation=2,
                                    n_test_good=2, n_test_defect=2)
    assert mvtec_loco.list_classes(root) == ["juice_bottle"]
    assert len(mvtec_loco.train_samples(root, "juice_bottle")) == 3
    assert len(mvtec_loco.validation_samples(root, "juice_bottle")) == 2
    test = mvtec_loco.test_samples(root, "juice_bottle")
    assert [s.defect_type for s in test] == [GOOD] * 2 + ["logical_anomalies"] * 2 + ["structural_anomalies"] * 2
    assert [len(s.mask_paths) for s in test] == [0, 0, 2, 2, 1, 2]
    with open(os.path.join(root, "juice_bottle", "defects_config.json")) as handle:
        entries = json.load(handle)
    kinds = {(type(e["saturation_threshold"]), e["relative_saturation"]) for e in entries}
    assert kinds == {(float, True), (int, False)}  # relative thresholds as JSON floats, absolute ones as ints
    threshold_of = {e["pixel_value"]: e["saturation_threshold"] for e in entries}
    defects = mvtec_loco.read_defects_config(os.path.join(root, "juice_bottle"))
    for sample in test[2:]:
        width, height = Image.open(sample.path).size
        assert (width, height) == (64, 48)
        stored = [raw(path) for path in sample.mask_paths]
        values = [int(np.unique(v[v > 0])[0]) for v in stored]
        assert len(set(values)) == len(values)  # distinct pixel values per channel
        channels = mvtec_loco.defect_channels(sample, defects)
        assert [c.saturation_threshold for c in channels] == [threshold_of[v] for v in values]
        np.testing.assert_array_equal(union(sample), np.any([v > 0 for v in stored], axis=0) * 255)


# -- VisA -------------------------------------------------------------------------------------------------------------
VISA_MASK_0 = block(12, 16, 1, slice(2, 6), slice(3, 8)) + block(12, 16, 2, slice(8, 10), slice(10, 14))
VISA_MASK_1 = block(12, 16, 1, slice(0, 3), slice(0, 3))
VISA_CSV = ("object,split,label,image,mask\r\n"
            "candle,train,normal,candle/Data/Images/Normal/0002.JPG,\r\n"
            "pcb1,train,normal,pcb1/Data/Images/Normal/0000.JPG,\r\n"
            "candle,train,normal,candle/Data/Images/Normal/0000.JPG,\r\n"
            "candle,test,anomaly,candle/Data/Images/Anomaly/001.JPG,candle/Data/Masks/Anomaly/001.png\r\n"
            "candle,test,normal,candle/Data/Images/Normal/0001.JPG,\r\n"
            "candle,test,anomaly,candle/Data/Images/Anomaly/000.JPG,candle/Data/Masks/Anomaly/000.png\r\n"
            "pcb1,test,normal,pcb1/Data/Images/Normal/0001.JPG,\r\n")


@pytest.fixture
def visa_root(tmp_path):
    for obj, stems in (("candle", ("0000", "0001", "0002")), ("pcb1", ("0000", "0001"))):
        for stem in stems:
            save(tmp_path / obj / "Data" / "Images" / "Normal" / f"{stem}.JPG", rgb(12, 16))
    for stem, mask in (("000", VISA_MASK_0), ("001", VISA_MASK_1)):
        save(tmp_path / "candle" / "Data" / "Images" / "Anomaly" / f"{stem}.JPG", rgb(12, 16))
        save(tmp_path / "candle" / "Data" / "Masks" / "Anomaly" / f"{stem}.png", mask)
    (tmp_path / "split_csv").mkdir()
    (tmp_path / "split_csv" / "1cls.csv").write_bytes(VISA_CSV.encode())
    return str(tmp_path)


def test_visa_follows_the_split_file(visa_root):
    assert visa.list_classes(visa_root) == ["candle", "pcb1"]
    train = visa.train_samples(visa_root, "candle")
    assert names(train) == ["good/0000", "good/0002"] and {s.label for s in train} == {0}
    assert all(s.path.endswith(".JPG") and os.path.isfile(s.path) for s in train)
    test = visa.test_samples(visa_root, "candle")
    assert names(test) == ["bad/000", "bad/001", "good/0001"]
    assert [s.label for s in test] == [1, 1, 0] and [s.defect_type for s in test] == ["bad", "bad", GOOD]
    assert test[0].mask_paths == (os.path.join(visa_root, "candle", "Data", "Masks", "Anomaly", "000.png"),)
    np.testing.assert_array_equal(union(test[0]), (VISA_MASK_0 > 0) * 255)  # ids 1 and 2 are both defect
    np.testing.assert_array_equal(union(test[1]), (VISA_MASK_1 > 0) * 255)
    assert names(visa.train_samples(visa_root, "pcb1")) == ["good/0000"]
    assert np.asarray(open_sample_image(test[0])).shape == (12, 16, 3)


def test_visa_split_file_errors(visa_root):
    with pytest.raises(UserError, match="did you mean 'candle'"):
        visa.train_samples(visa_root, "candel")
    csv_path = os.path.join(visa_root, "split_csv", "1cls.csv")
    with open(csv_path, "a") as handle:
        handle.write("candle,train,anomaly,candle/Data/Images/Anomaly/000.JPG,candle/Data/Masks/Anomaly/000.png\r\n")
    with pytest.raises(UserError, match="line 9: an anomalous image in the train split"):
        visa.train_samples(visa_root, "candle")
    with open(csv_path, "w") as handle:
        handle.write("object;split;label;image;mask\n")
    with pytest.raises(UserError, match="header"):
        visa.train_samples(visa_root, "candle")
    os.remove(csv_path)
    with pytest.raises(UserError) as info:
        visa.list_classes(visa_root)
    assert csv_path in str(info.value) and "1cls.csv" in str(info.value) and "\n" not in str(info.value)


def test_visa_writer(tmp_path):
    root = layouts.write_visa(str(tmp_path), ("capsules",), size=64, n_train=3, n_test_good=2, n_test_defect=2)
    with open(os.path.join(root, "split_csv", "1cls.csv"), "rb") as handle:
        text = handle.read()
    assert text.startswith(b"object,split,label,image,mask\r\n") and text.count(b"\r\n") == 1 + 3 + 2 + 2
    train, test = visa.train_samples(root, "capsules"), visa.test_samples(root, "capsules")
    assert len(train) == 3 and [s.label for s in test] == [1, 1, 0, 0]
    stored = [raw(s.mask_path) for s in test[:2]]
    assert set(np.unique(stored[0])) == {0, 1} and set(np.unique(stored[1])) <= {0, 1, 2}
    assert 2 in np.unique(stored[1])  # masks hold class ids, not 255
    for sample, values in zip(test, stored):
        np.testing.assert_array_equal(union(sample), (values > 0) * 255)


# -- KolektorSDD -------------------------------------------------------------------------------------------------------
# kos folder -> [(part height, defect rows or None)]; parts are 6 px wide, heights differ as in the real set
KOS = {"kos01": [(12, None), (14, slice(3, 6))], "kos02": [(13, None), (12, None)],
       "kos03": [(15, slice(0, 2)), (12, None)], "kos04": [(16, None)]}
FOLDS_TEST = [["kos01", "kos04"], ["kos02"], ["kos03"]]


def write_kos(root, label_value=255):
    for folder, parts in KOS.items():
        for part, (height, rows) in enumerate(parts):
            Image.fromarray(np.full((height, 6), 90, np.uint8)).save(_mkdir(root, folder) / f"Part{part}.jpg")
            label = np.zeros((height, 6), np.uint8)
            if rows is not None:
                label[rows, 1:4] = label_value
            Image.fromarray(label).save(root / folder / f"Part{part}_label.bmp")


def _mkdir(root, folder):
    (root / folder).mkdir(parents=True, exist_ok=True)
    return root / folder


def write_split(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(content, handle, protocol=2)


@pytest.fixture
def ksdd(tmp_path):
    root = tmp_path / "KolektorSDD"
    write_kos(root, label_value=1)  # any value above 0 is a defect
    train_split = [sorted(set(KOS) - set(test)) for test in FOLDS_TEST]
    write_split(tmp_path / "KolektorSDD-training-splits" / "split.pyb", [train_split, FOLDS_TEST, sorted(KOS)])
    return str(root)


def test_kolektor_folds(ksdd):
    assert kolektor.list_classes(ksdd) == ["kolektor"]
    assert names(kolektor.train_samples(ksdd, "kolektor", 0)) == [
        "good/kos02_Part0", "good/kos02_Part1", "good/kos03_Part1"]
    test = kolektor.test_samples(ksdd, "kolektor", 0)
    assert names(test) == ["defect/kos01_Part1", "good/kos01_Part0", "good/kos04_Part0"]
    assert [s.label for s in test] == [1, 0, 0] and [s.defect_type for s in test] == ["defect", GOOD, GOOD]
    assert test[0].mask_paths == (os.path.join(ksdd, "kos01", "Part1_label.bmp"),) and test[1].mask_paths == ()
    expected = np.zeros((14, 6), np.uint8)
    expected[3:6, 1:4] = 255
    np.testing.assert_array_equal(union(test[0]), expected)
    assert names(kolektor.train_samples(ksdd, "kolektor", "2")) == [
        "good/kos01_Part0", "good/kos02_Part0", "good/kos02_Part1", "good/kos04_Part0"]
    assert names(kolektor.test_samples(ksdd, "kolektor", 2)) == ["defect/kos03_Part0", "good/kos03_Part1"]
    assert names(kolektor.FORMAT.test(ksdd, "kolektor", 1)) == ["good/kos02_Part0", "good/kos02_Part1"]


def test_kolektor_split_file_places_and_errors(ksdd, tmp_path):
    sibling = tmp_path / "KolektorSDD-training-splits" / "split.pyb"
    inside = os.path.join(ksdd, "split.pyb")
    shutil.move(str(sibling), inside)
    assert names(kolektor.test_samples(ksdd + os.sep, "kolektor", 1)) == ["good/kos02_Part0", "good/kos02_Part1"]
    with pytest.raises(UserError, match="needs a fold"):
        kolektor.train_samples(ksdd, "kolektor", None)
    with pytest.raises(UserError, match="fold 3 is not in"):
        kolektor.train_samples(ksdd, "kolektor", 3)
    with pytest.raises(UserError, match="one class, 'kolektor'"):
        kolektor.train_samples(ksdd, "kos01", 0)
    os.remove(inside)
    with pytest.raises(UserError) as info:
        kolektor.test_samples(ksdd, "kolektor", 0)
    assert str(sibling) in str(info.value) and "\n" not in str(info.value)
    write_split(sibling, [[["kos02"]] * 3, [["kos09"]] * 3, ["kos02", "kos09"]])
    with pytest.raises(UserError, match="kos09"):
        kolektor.test_samples(ksdd, "kolektor", 0)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_kolektor_split_file_cannot_run_code(ksdd, tmp_path):
    marker = str(tmp_path / "code-ran")
    write_split(tmp_path / "KolektorSDD-training-splits" / "split.pyb", [[[_RunsCode(marker)]], [["kos01"]], []])
    with pytest.raises(UserError, match="posix.mkdir|os.mkdir|nt.mkdir"):
        kolektor.train_samples(ksdd, "kolektor", 0)
    assert not os.path.exists(marker)


def test_kolektor_split_file_as_numpy_arrays(ksdd, tmp_path):
    train = [np.array(sorted(set(KOS) - set(test))) for test in FOLDS_TEST]
    write_split(tmp_path / "KolektorSDD-training-splits" / "split.pyb",
                [train, [np.array(t) for t in FOLDS_TEST], np.array(sorted(KOS))])
    assert names(kolektor.test_samples(ksdd, "kolektor", 2)) == ["defect/kos03_Part0", "good/kos03_Part1"]


def test_kolektor_writer(tmp_path):
    root = layouts.write_kolektor(str(tmp_path / "KolektorSDD"), size=32, n_folders=6, n_parts=4)
    assert os.path.isfile(str(tmp_path / "KolektorSDD-training-splits" / "split.pyb"))
    all_parts = sorted(os.path.join(d, f) for d, _, files in os.walk(root) for f in files if f.endswith(".jpg"))
    assert len(all_parts) == 6 * 4 - 1
    heights = {Image.open(p).size[1] for p in all_parts}
    assert len(heights) == 3 and {Image.open(p).size[0] for p in all_parts} == {16}
    tested = []
    for fold in kolektor.FOLDS:
        train = kolektor.train_samples(root, "kolektor", fold)
        test = kolektor.test_samples(root, "kolektor", fold)
        assert {s.label for s in train} == {0} and {s.label for s in test} == {0, 1}
        assert not {os.path.dirname(s.path) for s in train} & {os.path.dirname(s.path) for s in test}
        for sample in test:
            label = os.path.splitext(sample.path)[0] + "_label.bmp"
            assert sample.label == int((raw(label) > 0).any())
        tested += [s.path for s in test]
    assert sorted(tested) == all_parts  # every part is tested in exactly one fold


# -- KolektorSDD2 ------------------------------------------------------------------------------------------------------
def test_kolektor2_ignores_the_copy(tmp_path):
    for split, ids in (("train", (10, 11)), ("test", (20, 21))):
        for i in ids:
            save(tmp_path / split / f"{i}.png", rgb(20, 8))
            save(tmp_path / split / f"{i}_GT.png", block(20, 8, 255 if i % 2 else 0, slice(4, 9), slice(2, 5)))
    shutil.copyfile(str(tmp_path / "train" / "10.png"), str(tmp_path / "train" / "10 (copy).png"))
    shutil.copyfile(str(tmp_path / "train" / "10_GT.png"), str(tmp_path / "train" / "10_GT (copy).png"))
    root = str(tmp_path)
    assert kolektor.list_classes_ksdd2(root) == ["kolektor2"]
    assert names(kolektor.train_samples_ksdd2(root, "kolektor2")) == ["good/10"]
    test = kolektor.test_samples_ksdd2(root, "kolektor2")
    assert names(test) == ["defect/21", "good/20"] and [s.label for s in test] == [1, 0]
    np.testing.assert_array_equal(union(test[0]), block(20, 8, 255, slice(4, 9), slice(2, 5)))
    os.remove(str(tmp_path / "test" / "20_GT.png"))
    with pytest.raises(UserError, match="20_GT.png not found"):
        kolektor.test_samples_ksdd2(root, "kolektor2")


def test_kolektor2_writer(tmp_path):
    root = layouts.write_kolektor2(str(tmp_path), size=32, n_train=5, n_test=4, n_defect_train=2, n_defect_test=1)
    assert os.path.isfile(os.path.join(root, "train", "10000 (copy).png"))
    train = kolektor.FORMAT_KSDD2.train(root, "kolektor2", None)
    test = kolektor.FORMAT_KSDD2.test(root, "kolektor2", None)
    assert len(train) == 3 and not any("copy" in s.path for s in train + test)
    assert [s.label for s in test] == [1, 0, 0, 0]
    for sample in train + test:
        assert sample.label == int((raw(sample.path[:-4] + "_GT.png") > 0).any())


# -- BTech -------------------------------------------------------------------------------------------------------------
def test_btech_bmp_and_png(tmp_path):
    mask = block(10, 10, 255, slice(2, 4), slice(5, 9))
    for path in ("01/train/ok/0000.png", "01/train/ok/0001.png", "01/test/ok/0000.png", "01/test/ko/0000.png",
                 "03/train/ok/0000.bmp", "03/test/ok/0000.bmp", "03/test/ko/0000.bmp", "03/test/ko/0001.bmp"):
        save(tmp_path / path, rgb(10, 10))
    for path in ("01/ground_truth/ko/0000.png", "03/ground_truth/ko/0000.bmp", "03/ground_truth/ko/0001.bmp"):
        save(tmp_path / path, mask)
    root = str(tmp_path)
    assert btech.list_classes(root) == ["01", "03"]
    assert names(btech.train_samples(root, "01")) == ["good/0000", "good/0001"]
    test = btech.test_samples(root, "03")
    assert names(test) == ["good/0000", "ko/0000", "ko/0001"] and [s.label for s in test] == [0, 1, 1]
    assert [s.defect_type for s in test] == [GOOD, "ko", "ko"]
    assert test[1].mask_paths == (os.path.join(root, "03", "ground_truth", "ko", "0000.bmp"),)
    np.testing.assert_array_equal(union(test[1]), mask)
    assert btech.test_samples(root, "01")[1].mask_path.endswith("0000.png")
    os.remove(str(tmp_path / "03" / "ground_truth" / "ko" / "0001.bmp"))
    with pytest.raises(UserError, match="no mask for .*0001.bmp"):
        btech.test_samples(root, "03")


def test_btech_writer(tmp_path):
    root = layouts.write_btech(str(tmp_path), size=32, n_train=3, n_test_good=2, n_test_defect=2)
    assert btech.list_classes(root) == ["01", "02", "03"]
    for cls, image_ext, mask_ext in (("01", ".bmp", ".png"), ("02", ".png", ".png"), ("03", ".bmp", ".bmp")):
        assert [s.path[-4:] for s in btech.train_samples(root, cls)] == [image_ext] * 3
        test = btech.test_samples(root, cls)
        assert [s.label for s in test] == [0, 0, 1, 1]
        for sample in test[2:]:
            assert sample.mask_path.endswith(mask_ext)
            np.testing.assert_array_equal(union(sample), (raw(sample.mask_path) > 0) * 255)


def test_layout_command(tmp_path, capsys):
    layouts.main(["--layout", "kolektor2", "--out", str(tmp_path / "k2"), "--size", "32"])
    assert "kolektor2" in capsys.readouterr().out
    assert kolektor.list_classes_ksdd2(str(tmp_path / "k2")) == ["kolektor2"]
    with pytest.raises(SystemExit) as info:
        layouts.main(["--layout", "kolektor", "--out", str(tmp_path / "k"), "--classes", "a"])
    assert info.value.code == 2 and capsys.readouterr().err.startswith("error: the kolektor layout has one class")
