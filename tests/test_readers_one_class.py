"""Readers of the one-class novelty benchmarks (CIFAR-10, MNIST, Fashion-MNIST, OCT2017) and the one-class protocol
helpers, on tiny files written in each published format (tests/one_class_files.py); the detection AUROC against a
plain re-statement of KDAD's ``test_functions.detection_test``."""
import os
import shutil

import numpy as np
import pytest

from common.core.errors import UserError
from common.data.readers import cifar10, mnist, retina
from common.data.readers.one_class import class_index, normal_class, normal_classes
from common.data.samples import open_sample_image
from conftest import method_dir
from metric_references import official_detection_test
from one_class_files import (
    CIFAR_NAMES,
    OCT_COUNTS,
    TRAIN_BATCHES,
    cifar_batches,
    cifar_files,
    cifar_hwc,
    mnist_arrays,
    write_cifar_archive,
    write_cifar_folder,
    write_idx,
    write_oct,
)

STYLES = ("py2", "str", "bytes")


# -- CIFAR-10 -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def batches():
    return cifar_batches(per_batch=6, test_count=10)


@pytest.fixture(scope="module", params=[(style, layout) for style in STYLES for layout in ("folder", "archive")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def cifar_root(request, batches, tmp_path_factory):
    """A CIFAR-10 root in each key style, as the extracted folder or as the official tar.gz."""
    style, layout = request.param
    root = str(tmp_path_factory.mktemp(f"cifar_{style}_{layout}"))
    files = cifar_files(batches, style)
    (write_cifar_folder if layout == "folder" else write_cifar_archive)(root, files)
    return root, layout


def _train_rows(batches):
    """(batch name, row in batch, index in split, label) of every training image, in the official order."""
    out, index = [], 0
    for name in TRAIN_BATCHES:
        for row, label in enumerate(batches[name][1]):
            out.append((name, row, index, label))
            index += 1
    return out


def test_cifar_train_is_the_normal_class_in_official_order(cifar_root, batches):
    root, layout = cifar_root
    assert cifar10.list_classes(root) == CIFAR_NAMES
    samples = cifar10.train(root, "dog")
    expected = [(name, row, index) for name, row, index, label in _train_rows(batches) if label == 5]
    assert len(samples) == len(expected) == 3
    base = os.path.join(root, "cifar-10-batches-py") if layout == "folder" else \
        os.path.join(root, "cifar-10-python.tar.gz", "cifar-10-batches-py")
    for sample, (name, row, index) in zip(samples, expected):
        assert (sample.label, sample.defect_type, sample.mask_paths) == (0, "good", ())
        assert sample.name == f"good/{index:05d}"
        assert sample.path == os.path.join(base, name, f"{row:05d}")
        np.testing.assert_array_equal(sample.pixels, cifar_hwc(batches[name][0][row]))
    # the index selects the same class
    assert [s.name for s in cifar10.train(root, 5)] == [s.name for s in samples]


def test_cifar_test_is_the_whole_test_batch_with_one_class_labels(cifar_root, batches):
    root, _ = cifar_root
    data, labels = batches["test_batch"]
    samples = cifar10.test(root, "cat")
    assert len(samples) == 10
    assert [s.label for s in samples] == [0 if label == 3 else 1 for label in labels]
    assert [s.defect_type for s in samples] == ["good" if label == 3 else CIFAR_NAMES[label] for label in labels]
    assert [s.name for s in samples] == [f"{s.defect_type}/{i:05d}" for i, s in enumerate(samples)]
    assert len({s.name for s in samples}) == 10
    for sample, row in zip(samples, data):
        np.testing.assert_array_equal(sample.pixels, cifar_hwc(row))


def test_cifar_pixel_whose_channels_differ(cifar_root):
    """Test image 2 has R, G, B = 10, 20, 30 at (y=1, x=3): the CHW -> HWC reshape keeps channels apart."""
    root, _ = cifar_root
    sample = cifar10.test(root, 0)[2]
    assert sample.pixels.shape == (32, 32, 3) and sample.pixels.dtype == np.uint8
    assert tuple(sample.pixels[1, 3]) == (10, 20, 30)
    image = open_sample_image(sample)
    assert image.mode == "RGB" and image.size == (32, 32)
    assert image.getpixel((3, 1)) == (10, 20, 30)


def test_cifar_pixels_are_read_only_views_of_one_array(cifar_root):
    root, _ = cifar_root
    samples = cifar10.test(root, 0)
    assert samples[0].pixels.base is not None and samples[0].pixels.base is samples[5].pixels.base
    assert not samples[0].pixels.flags.writeable


def test_cifar_label_names_come_from_batches_meta(batches, tmp_path):
    names = tuple(reversed(CIFAR_NAMES))
    write_cifar_archive(str(tmp_path / "a"), cifar_files(batches, "py2", label_names=names))
    write_cifar_folder(str(tmp_path / "f"), cifar_files(batches, "bytes", label_names=names))
    write_cifar_folder(str(tmp_path / "none"), cifar_files(batches, "str", label_names=None))
    for root in (tmp_path / "a", tmp_path / "f"):
        assert cifar10.list_classes(str(root)) == names
        test = cifar10.test(str(root), "truck")  # index 0 under the reversed names
        assert [s.label for s in test] == [0 if label == 0 else 1 for label in batches["test_batch"][1]]
        assert normal_class(cifar10.FORMAT, 0, str(root)) == "truck"
    assert cifar10.list_classes(str(tmp_path / "none")) == CIFAR_NAMES  # no batches.meta: the published order


def test_cifar_root_may_be_the_folder_or_the_archive_and_the_folder_wins(batches, tmp_path):
    files = cifar_files(batches, "str")
    folder = write_cifar_folder(str(tmp_path), files)
    archive = write_cifar_archive(str(tmp_path), files)
    assert cifar10.locate(str(tmp_path)) == folder
    for root in (folder, archive):
        assert [s.name for s in cifar10.test(root, 1)] == [s.name for s in cifar10.test(str(tmp_path), 1)]


def test_cifar_a_replaced_file_is_read_again(batches, tmp_path):
    write_cifar_folder(str(tmp_path), cifar_files(batches, "str"))
    before = cifar10.test(str(tmp_path), 0)[4].pixels.copy()
    changed = dict(batches)
    data = batches["test_batch"][0].copy()
    data[4] = 255 - data[4]
    changed["test_batch"] = (data, batches["test_batch"][1])
    path = os.path.join(str(tmp_path), "cifar-10-batches-py", "test_batch")
    os.remove(path)
    write_cifar_folder(str(tmp_path), {"test_batch": cifar_files(changed, "str")["test_batch"]})
    os.utime(path, ns=(1, 1))  # a different modification time even on coarse clocks
    np.testing.assert_array_equal(cifar10.test(str(tmp_path), 0)[4].pixels, 255 - before)


def test_cifar_matches_paddle_reading_the_same_archive(batches, tmp_path):
    """Paddle's own Cifar10 reads byte-string-key archives; its images must equal ours."""
    from paddle.vision.datasets import Cifar10

    archive = write_cifar_archive(str(tmp_path), cifar_files(batches, "bytes"))
    for mode, ours in (("test", cifar10.test(archive, 0)), ("train", None)):
        theirs = Cifar10(data_file=archive, mode=mode, download=False, backend="cv2")
        if ours is None:  # train: Paddle keeps every class; compare the rows of class 0 in order
            rows = [i for i in range(len(theirs)) if int(theirs[i][1]) == 0]
            ours = cifar10.train(archive, 0)
            assert [s.name for s in ours] == [f"good/{i:05d}" for i in rows]
        else:
            rows = range(len(theirs))
        for sample, i in zip(ours, rows):
            image, _ = theirs[i]
            np.testing.assert_array_equal(sample.pixels, np.asarray(image).astype(np.uint8))


def test_cifar_missing_data_is_one_line_naming_file_and_source(tmp_path):
    with pytest.raises(UserError) as info:
        cifar10.train(str(tmp_path), "cat")
    message = str(info.value)
    assert "\n" not in message
    assert os.path.join(str(tmp_path), "cifar-10-python.tar.gz") in message
    assert "cs.toronto.edu" in message
    assert f"python -m common.download_dataset cifar10 {tmp_path}" in message  # the way out on a machine online


def test_cifar_download_is_opt_in_and_uses_paddle(tmp_path, monkeypatch):
    """No network here: Paddle's downloader is replaced, and must be called only with download=True."""
    import paddle.utils.download as paddle_download

    calls = []

    def fake_get_path_from_url(url, root_dir, md5sum=None, check_exist=True, decompress=True, method="get"):
        calls.append((url, root_dir, md5sum, decompress))
        files = cifar_files(cifar_batches(), "py2")
        return write_cifar_archive(root_dir, files)

    monkeypatch.setattr(paddle_download, "get_path_from_url", fake_get_path_from_url)
    root = str(tmp_path / "new")
    with pytest.raises(UserError):
        cifar10.test(root, 0)
    assert not calls
    assert len(cifar10.test(root, 0, download=True)) == 10
    (url, root_dir, md5, decompress), = calls
    assert url.endswith("cifar-10-python.tar.gz") and root_dir == root and md5 and decompress is False


def fake_paddle_download(calls, write):
    """A stand-in for ``paddle.utils.download.get_path_from_url`` (no network here): logs as Paddle does, records
    the call and writes the file with ``write(root_dir, file name)``."""
    import logging

    def get_path_from_url(url, root_dir, md5sum=None, check_exist=True, decompress=True, method="get"):
        logging.getLogger("paddle.utils.download").info("Downloading %s", url)
        calls.append((url, root_dir, md5sum, decompress))
        return write(root_dir, url.rsplit("/", 1)[1])

    return get_path_from_url


def test_download_command_fetches_what_is_missing_with_paddle(tmp_path, monkeypatch, capsys, paddle_download_log):
    """``python -m common.download_dataset``: Paddle's URL and MD5 for each missing file, files already there kept,
    the readers then read the folder; Paddle's log lines are not shown."""
    import paddle.utils.download as paddle_download

    from common.data import download

    calls = []
    arrays = mnist_arrays(train_count=12, test_count=10)

    def write(root_dir, name):
        split = "train" if name.startswith("train") else "test"
        write_idx(os.path.join(root_dir, "staging"), {split: arrays[split]})
        os.replace(os.path.join(root_dir, "staging", name), os.path.join(root_dir, name))
        return os.path.join(root_dir, name)

    monkeypatch.setattr(paddle_download, "get_path_from_url", fake_paddle_download(calls, write))
    root = tmp_path / "mnist"
    root.mkdir()
    write_idx(str(root), {"test": arrays["test"]})  # the two test files are there already
    assert download.main(["mnist", str(root)]) == 0
    assert sorted(os.path.basename(url) for url, *_ in calls) == ["train-images-idx3-ubyte.gz",
                                                                  "train-labels-idx1-ubyte.gz"]
    assert all(url.startswith("https://") and md5 and decompress is False for url, _, md5, decompress in calls)
    assert "--dataset mnist" in capsys.readouterr().out and not paddle_download_log
    assert len(mnist.train(str(root), 3)) == int(np.sum(arrays["train"][1] == 3))
    calls.clear()
    assert download.main(["mnist", str(root)]) == 0 and not calls  # everything there: nothing fetched


# -- MNIST and Fashion-MNIST ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def arrays():
    return mnist_arrays(train_count=12, test_count=10)


@pytest.mark.parametrize("layout", ["root_gz", "root_plain", "torchvision_raw", "kaggle_dotted"])
def test_mnist_train_and_test(arrays, layout, tmp_path):
    root = str(tmp_path)
    folder = os.path.join(root, "MNIST", "raw") if layout == "torchvision_raw" else root
    paths = write_idx(folder, arrays, gzipped=layout not in ("root_plain", "kaggle_dotted"))
    image_file = "train-images-idx3-ubyte"
    if layout == "kaggle_dotted":  # Kaggle's copies: train-images.idx3-ubyte, un-gzipped
        for path in paths:
            os.rename(path, path.replace("-idx", ".idx"))
        image_file = "train-images.idx3-ubyte"
    train_images, train_labels = arrays["train"]
    test_images, test_labels = arrays["test"]
    assert mnist.list_classes(root) == tuple("0123456789")

    samples = mnist.train(root, "3")
    rows = [i for i, label in enumerate(train_labels) if label == 3]
    assert len(samples) == len(rows) == 2
    for sample, row in zip(samples, rows):
        assert (sample.label, sample.defect_type, sample.name) == (0, "good", f"good/{row:05d}")
        assert sample.path.startswith(os.path.join(folder, image_file))
        assert sample.path.endswith(f"/{row:05d}")
        np.testing.assert_array_equal(sample.pixels, train_images[row])
    assert [s.name for s in mnist.train(root, 3)] == [s.name for s in samples]

    test = mnist.test(root, 4)
    assert len(test) == 10
    assert [s.label for s in test] == [0 if label == 4 else 1 for label in test_labels]
    assert [s.defect_type for s in test] == ["good" if label == 4 else str(label) for label in test_labels]
    for sample, image in zip(test, test_images):
        np.testing.assert_array_equal(sample.pixels, image)
    assert open_sample_image(test[0]).getpixel((5, 7)) == (int(test_images[0][7, 5]),) * 3


def test_fashion_mnist_names_and_torchvision_layout(arrays, tmp_path):
    write_idx(str(tmp_path / "FashionMNIST" / "raw"), arrays)
    root = str(tmp_path)
    fmt = mnist.FORMAT_FASHION
    assert fmt.list_classes(root) == mnist.FASHION_CLASSES and len(fmt.classes) == 10
    assert normal_class(fmt, "T-shirt/top") == "T-shirt_top" == normal_class(fmt, 0)
    assert normal_class(fmt, "Ankle boot") == "Ankle_boot" == normal_class(fmt, "9")
    test = fmt.test(root, "Ankle boot")
    labels = arrays["test"][1]
    assert [s.defect_type for s in test] == ["good" if label == 9 else mnist.FASHION_CLASSES[label]
                                             for label in labels]
    assert all("/" not in s.defect_type and " " not in s.defect_type for s in test)
    assert len(fmt.train(root, "Trouser")) == sum(1 for label in arrays["train"][1] if label == 1)
    # MNIST's folder name is not Fashion-MNIST's
    with pytest.raises(UserError, match="MNIST file not found"):
        mnist.test(root, 0)


def test_idx_size_comes_from_the_header(tmp_path):
    arrays = mnist_arrays(train_count=5, test_count=4, rows=5, cols=7)
    write_idx(str(tmp_path), arrays)
    sample = mnist.test(str(tmp_path), 1)[3]
    assert sample.pixels.shape == (5, 7)
    np.testing.assert_array_equal(sample.pixels, arrays["test"][0][3])


def test_mnist_matches_paddle_reading_the_same_files(tmp_path):
    """Paddle's MNIST reads gzipped 28x28 files whose count is a multiple of 100; its images must equal ours."""
    from paddle.vision.datasets import MNIST

    arrays = mnist_arrays(train_count=100, test_count=100)
    paths = write_idx(str(tmp_path), arrays)
    theirs = MNIST(image_path=paths[2], label_path=paths[3], mode="test", download=False, backend="cv2")
    ours = mnist.test(str(tmp_path), 0)
    assert len(theirs) == len(ours) == 100
    for sample, i in zip(ours, range(100)):
        image, label = theirs[i]
        np.testing.assert_array_equal(sample.pixels, np.asarray(image).astype(np.uint8))
        assert sample.label == (0 if int(label[0]) == 0 else 1)


def test_mnist_download_is_opt_in_and_fetches_only_missing_files(arrays, tmp_path, monkeypatch):
    import paddle.utils.download as paddle_download

    paths = write_idx(str(tmp_path / "source"), arrays)
    by_name = {os.path.basename(p): p for p in paths}
    calls = []

    def fake_get_path_from_url(url, root_dir, md5sum=None, check_exist=True, decompress=True, method="get"):
        calls.append(url)
        target = os.path.join(root_dir, os.path.basename(url))
        shutil.copy(by_name[os.path.basename(url)], target)
        return target

    monkeypatch.setattr(paddle_download, "get_path_from_url", fake_get_path_from_url)
    root = str(tmp_path / "root")
    os.makedirs(root)
    shutil.copy(by_name["t10k-images-idx3-ubyte.gz"], root)
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte"):
        mnist.test(root, 0)
    assert len(mnist.FORMAT_FASHION.test(root, 0, download=True)) == 10
    assert calls == ["https://dataset.bj.bcebos.com/fashion_mnist/t10k-labels-idx1-ubyte.gz"]


# -- Retinal-OCT (OCT2017) ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def oct_root(tmp_path_factory):
    return write_oct(str(tmp_path_factory.mktemp("oct") / "OCT2017"))


def test_oct_classes_in_imagefolder_order(oct_root):
    fmt = retina.FORMAT
    assert retina.list_classes(oct_root) == ["CNV", "DME", "DRUSEN", "NORMAL"]  # .ipynb_checkpoints skipped
    assert class_index(fmt, "NORMAL") == 3 == class_index(fmt, "normal", oct_root)
    assert normal_class(fmt, 3) == "NORMAL" == normal_class(fmt, "3", oct_root)
    assert normal_classes(fmt, "all", oct_root) == ["CNV", "DME", "DRUSEN", "NORMAL"]


def test_oct_one_class_train_and_whole_test(oct_root):
    train = retina.train(oct_root, 3)
    assert len(train) == OCT_COUNTS["train"]["NORMAL"] == 3
    assert all(s.label == 0 and s.defect_type == "good" and "/train/NORMAL/" in s.path for s in train)
    assert all(s.pixels is None for s in train)
    test = retina.test(oct_root, "NORMAL")
    assert len(test) == sum(OCT_COUNTS["test"].values()) == 8
    assert [s.defect_type for s in test] == ["CNV"] * 2 + ["DME"] * 2 + ["DRUSEN"] * 2 + ["good"] * 2
    assert [s.label for s in test] == [1] * 6 + [0] * 2
    assert not any("/val/" in s.path for s in test + train)
    assert test[0].name == "CNV/CNV-1000-1" and test[-1].name == "good/NORMAL-1001-2"
    image = open_sample_image(test[0])
    assert image.mode == "RGB" and image.size == (16, 12)


def test_oct_official_unfiltered_training_set(oct_root):
    """P12: the official training set is every class folder of train/, labelled here by the protocol rule."""
    train = retina.train(oct_root, "NORMAL", all_classes=True)
    assert len(train) == sum(OCT_COUNTS["train"].values()) == 7
    assert [s.defect_type for s in train] == ["CNV"] * 2 + ["DME", "DRUSEN"] + ["good"] * 3
    assert sum(s.label == 0 for s in train) == 3


def test_oct_root_may_hold_the_oct2017_folder(oct_root):
    parent = os.path.dirname(oct_root)
    assert [s.path for s in retina.test(parent, 3)] == [s.path for s in retina.test(oct_root, 3)]


def test_oct_another_normal_class_and_missing_folder(oct_root, tmp_path):
    test = retina.test(oct_root, "DME")
    assert [s.label for s in test] == [1, 1, 0, 0, 1, 1, 1, 1]
    with pytest.raises(UserError, match="OCT2017 folder not found") as info:
        retina.train(str(tmp_path), 3)
    assert "\n" not in str(info.value) and "mendeley" in str(info.value)


# -- class resolution ---------------------------------------------------------------------------------------------
def test_normal_classes_all_lists_and_indices():
    assert normal_classes(cifar10.FORMAT, "all") == list(CIFAR_NAMES)
    assert normal_classes(mnist.FORMAT, "all") == list("0123456789")
    assert normal_classes(cifar10.FORMAT, "0, dog,3") == ["airplane", "dog", "cat"]
    assert class_index(cifar10.FORMAT, "ship") == 8 and class_index(mnist.FORMAT, 7) == 7
    assert normal_class(cifar10.FORMAT, np.int64(1)) == "automobile"


@pytest.mark.parametrize("fmt, value, listed", [
    (cifar10.FORMAT, 10, "9=truck"),
    (cifar10.FORMAT, "-1", "0=airplane"),
    (mnist.FORMAT, "-1", "0, 1, 2"),
    (mnist.FORMAT, "ten", "0, 1, 2"),
    (mnist.FORMAT_FASHION, "boot", "9=Ankle_boot"),
    (retina.FORMAT, 4, "3=NORMAL"),
])
def test_a_class_outside_the_dataset_is_one_line_listing_the_valid_ones(fmt, value, listed):
    with pytest.raises(UserError) as info:
        normal_class(fmt, value)
    assert "\n" not in str(info.value) and listed in str(info.value) and str(value) in str(info.value)


# -- detection AUROC ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_detection_auroc_matches_the_official_function(seed):
    rng = np.random.default_rng(seed)
    class_labels = rng.integers(0, 10, 200)
    target = int(seed % 10)
    scores = np.round(rng.normal(size=200) + (class_labels != target) * 0.7, 1)  # one decimal: many ties
    ours = detection_auroc((class_labels != target).astype(int), scores)
    assert ours == official_detection_test(class_labels.tolist(), scores.tolist(), target)
    assert isinstance(ours, float)


method_dir("KDAD-paddle")
from kdad.metric import kdad_detection_auroc  # noqa: E402 - the official detection metric is KDAD's


def detection_auroc(labels, scores):
    """KDAD's detection metric (``kdad.metric``) in the protocol's labels: 1 for the classes other than the normal."""
    return kdad_detection_auroc(scores, np.asarray(labels) == 1)


def test_detection_auroc_ties_and_extremes():
    # one normal and one anomaly share the top score: that step is diagonal, worth half
    labels, scores = [0, 0, 1, 1], [0.1, 0.5, 0.5, 0.9]
    assert detection_auroc(labels, scores) == official_detection_test([3, 3, 1, 2], scores, 3) == 0.875
    assert detection_auroc([0, 1, 0, 1], [2.0, 2.0, 2.0, 2.0]) == 0.5
    assert detection_auroc([0, 0, 1], [0.1, 0.2, 0.3]) == 1.0
    assert detection_auroc([1, 1, 0], [0.1, 0.2, 0.3]) == 0.0
    with pytest.raises(ValueError, match="both good and defective"):
        detection_auroc([0, 0], [0.1, 0.2])
    # rounded to 4 decimals as the official code does: 7 of 9 (normal, anomaly) pairs ordered -> 0.7778
    assert detection_auroc([0, 0, 0, 1, 1, 1], [1, 2, 5, 3, 4, 6]) == 0.7778
