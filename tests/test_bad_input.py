"""Bad input, the same way for every landed method: each command runs as a user runs it (a subprocess, with a
timeout so that a hang fails the test instead of blocking CI) and must end with one ``error:`` line and exit 2,
or succeed where the README promises a graceful path. Nothing half-written may be left behind."""
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from common.data.synthetic import make_class
from method_harness import METHODS, folder, run_script, tiny_config, train_tiny

PACKAGES = sorted(METHODS)
TIMEOUT = 120  # seconds; every case here finishes in a few


def make_data(root, classes=("bottle",)):
    for cls in classes:
        make_class(str(root), cls, size=64, n_train=8, n_test_good=2, n_test_defect=1, seed=0)
    return str(root)


def truncate(path):
    with open(path, "rb") as handle:
        data = handle.read()
    with open(path, "wb") as handle:
        handle.write(data[: len(data) // 2])


def tiny(package):
    return ["--config", tiny_config(package), "--threads", "1"]


def run(package, script, *args):
    return run_script(package, script, *args, timeout=TIMEOUT)


def assert_one_error_line(result, *fragments):
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    return lines[-1]


def assert_nothing_half_written(root):
    leftovers = [os.path.join(d, f) for d, _, files in os.walk(root) for f in files if f.startswith(".tmp-")]
    assert not leftovers, leftovers


@pytest.fixture(scope="module", params=PACKAGES)
def trained(request, tmp_path_factory):
    """A tiny model of bottle for each method, trained in-process once; cases copy its output folder."""
    package = request.param
    root = tmp_path_factory.mktemp(f"bad_{package}")
    data = make_data(root / "data")
    train_tiny(package, data, str(root / "out"))
    return package, str(root / "out")


def copy_model(trained, tmp_path):
    package, out = trained
    target = str(tmp_path / "out")
    shutil.copytree(out, target)
    return package, target


# -- before any model work ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("package", PACKAGES)
def test_missing_data_folder_and_misspelled_class(package, tmp_path):
    result = run(package, "main.py", "--mode", "train", "--data_dir", tmp_path / "missing", *tiny(package))
    assert_one_error_line(result, "not found", "missing")
    data = make_data(tmp_path / "data")
    result = run(package, "main.py", "--mode", "train", "--cls", "botle", "--data_dir", data, *tiny(package))
    assert_one_error_line(result, "did you mean 'bottle'")


@pytest.mark.parametrize("package", PACKAGES)
def test_empty_train_folder(package, tmp_path):
    data = make_data(tmp_path / "data")
    for name in os.listdir(os.path.join(data, "bottle", "train", "good")):
        os.remove(os.path.join(data, "bottle", "train", "good", name))
    result = run(package, "train.py", "--cls", "bottle", "--data_dir", data, "--output_dir", tmp_path / "out",
                 *tiny(package))
    assert_one_error_line(result, "no training images")


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("package", PACKAGES)
def test_truncated_training_image_fails_fast_naming_the_file(package, num_workers, tmp_path):
    data = make_data(tmp_path / "data")
    bad = os.path.join(data, "bottle", "train", "good", "003.png")
    truncate(bad)
    out = tmp_path / "out"
    start = time.time()
    result = run(package, "train.py", "--cls", "bottle", "--data_dir", data, "--output_dir", out,
                 "--num_workers", num_workers, *tiny(package))
    assert_one_error_line(result, bad)
    assert time.time() - start < TIMEOUT
    assert not os.path.exists(out / "bottle" / "thresholds.json")
    assert_nothing_half_written(out)


def test_truncated_test_image_and_wrong_size_mask_fail_eval_fast(trained, tmp_path):
    package, out = copy_model(trained, tmp_path)
    data = make_data(tmp_path / "data")
    bad = os.path.join(data, "bottle", "test", "blob", "000.png")
    truncate(bad)
    result = run(package, "eval.py", "--cls", "bottle", "--data_dir", data, "--output_dir", out, "--num_workers", 2)
    assert_one_error_line(result, bad)
    data2 = make_data(tmp_path / "data2")
    mask = os.path.join(data2, "bottle", "ground_truth", "scratch", "000_mask.png")
    Image.open(mask).resize((48, 48)).save(mask)
    result = run(package, "main.py", "--mode", "eval", "--cls", "bottle", "--data_dir", data2, "--output_dir", out)
    assert_one_error_line(result, mask, "48x48")
    assert not os.path.exists(os.path.join(out, "results"))  # no results from a failed evaluation


def test_truncated_image_given_to_predict_and_infer(trained, tmp_path):
    package, out = copy_model(trained, tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(images / "a.png")
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(images / "b.png")
    truncate(images / "b.png")
    result = run(package, "predict.py", "--cls", "bottle", "--output_dir", out, "--input", images)
    assert_one_error_line(result, "b.png")
    assert run(package, "export_model.py", "--cls", "bottle", "--output_dir", out).returncode == 0
    result = run(package, "infer.py", "--model_dir", os.path.join(out, "bottle", "inference"), "--input", images)
    assert_one_error_line(result, "b.png")


# -- accepted inputs ---------------------------------------------------------------------------------------------
def _convert_images(data, mode):
    for d, _, files in os.walk(os.path.join(data, "bottle")):
        if "ground_truth" in d:
            continue
        for name in files:
            path = os.path.join(d, name)
            image = Image.open(path).convert("RGB")
            if mode == "I;16":
                Image.fromarray(np.asarray(image.convert("L"), np.uint16) * 257).save(path)
            elif mode == "P":
                image.convert("P", palette=Image.ADAPTIVE).save(path)
            else:
                image.convert(mode).save(path)


@pytest.mark.parametrize("package", PACKAGES)
def test_grayscale_rgba_16_bit_and_palette_images_are_accepted(package, tmp_path):
    data = make_data(tmp_path / "data")
    _convert_images(data, "L")
    # mixed modes in one class: the test images in the other three
    for mode, defect in (("RGBA", "blob"), ("I;16", "patch"), ("P", "scratch")):
        for name in os.listdir(os.path.join(data, "bottle", "test", defect)):
            path = os.path.join(data, "bottle", "test", defect, name)
            image = Image.open(path).convert("RGB")
            if mode == "I;16":
                Image.fromarray(np.asarray(image.convert("L"), np.uint16) * 257).save(path)
            else:
                (image.convert("P", palette=Image.ADAPTIVE) if mode == "P" else image.convert(mode)).save(path)
    out = tmp_path / "out"
    result = run(package, "main.py", "--mode", "train", "--cls", "bottle", "--data_dir", data, "--output_dir", out,
                 "--eval", *tiny(package))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "image_auroc" in result.stdout


def test_no_defective_test_images_evaluates_with_metrics_not_defined(trained, tmp_path):
    package, out = copy_model(trained, tmp_path)
    data = make_data(tmp_path / "data")
    for defect in ("blob", "patch", "scratch"):
        shutil.rmtree(os.path.join(data, "bottle", "test", defect))
    shutil.rmtree(os.path.join(data, "bottle", "ground_truth"))
    result = run(package, "eval.py", "--cls", "bottle", "--data_dir", data, "--output_dir", out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "image_auroc n/a" in result.stdout


# -- failures during and around training ---------------------------------------------------------------------------
def _nan_weights(path):
    import paddle
    import paddle.vision.models as models

    state = {k: paddle.full_like(v, float("nan")) if "float" in str(v.dtype) else v
             for k, v in models.resnet18().state_dict().items()}
    paddle.save(state, str(path))


@pytest.mark.parametrize("package", PACKAGES)
def test_nan_stops_training_with_one_line(package, tmp_path):
    data = make_data(tmp_path / "data")
    weights = tmp_path / "nan.pdparams"
    _nan_weights(weights)
    out = tmp_path / "out"
    result = run(package, "train.py", "--cls", "bottle", "--data_dir", data, "--output_dir", out,
                 "--backbone_weights", weights, *tiny(package))
    assert_one_error_line(result, "nan")
    assert not os.path.exists(out / "bottle" / "thresholds.json")
    assert_nothing_half_written(out)


@pytest.mark.slow
@pytest.mark.parametrize("package", PACKAGES)
def test_interrupted_training_resumes(package, tmp_path):
    data = make_data(tmp_path / "data")
    out = tmp_path / "out"
    args = ["train.py", "--cls", "bottle", "--data_dir", data, "--output_dir", out, *tiny(package)]
    if package == "rd4ad":
        args += ["--epochs", 6, "--save_interval", 1]
    process = subprocess.Popen([sys.executable, *map(str, args)], cwd=folder(package), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    if package == "rd4ad":  # interrupt after a resumable state was written (after epoch 1 of 6)
        deadline = time.time() + TIMEOUT
        while not (out / "bottle" / "train_state.pdparams").exists() and process.poll() is None \
                and time.time() < deadline:
            time.sleep(0.2)
    else:  # a fit is one pass: interrupt it once it has started
        process.stdout.readline()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=TIMEOUT)
    assert process.returncode in (0, 130, -signal.SIGINT), err[-3000:]  # done, or stopped by the interrupt
    assert "Traceback" not in err
    assert_nothing_half_written(out)
    resume = ["--resume"] if package == "rd4ad" else []  # a fit has no intermediate state: it starts again
    result = run(package, *args, *resume)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "bottle" / "thresholds.json").exists()


@pytest.mark.parametrize("package", PACKAGES)
def test_unwritable_output_folder(package, tmp_path):
    data = make_data(tmp_path / "data")
    blocker = tmp_path / "out"
    blocker.write_text("a file where the output folder should be")
    result = run(package, "train.py", "--cls", "bottle", "--data_dir", data, "--output_dir", blocker,
                 *tiny(package))
    assert_one_error_line(result, str(blocker))


@pytest.mark.parametrize("package", PACKAGES)
def test_a_failing_class_does_not_stop_the_loop(package, tmp_path):
    data = make_data(tmp_path / "data", classes=("bottle", "carpet"))
    truncate(os.path.join(data, "bottle", "train", "good", "001.png"))
    out = tmp_path / "out"
    result = run(package, "main.py", "--mode", "train", "--cls", "all", "--data_dir", data, "--output_dir", out,
                 *tiny(package))
    assert_one_error_line(result, "1 of 2 classes", "bottle")
    assert (out / "carpet" / "thresholds.json").exists() and not (out / "bottle" / "thresholds.json").exists()
    assert_nothing_half_written(out)


# -- industrial dataset readers (issue 19): a bad file stops with one line naming it ---------------------------------
# The readers are called in-process through main_guard (what every command wraps around its work), so the check is
# the one above: exit 2 and a single "error: ..." line naming the file.
def assert_reader_error(capsys, call, *fragments):
    from common.core.errors import main_guard

    with pytest.raises(SystemExit) as info:
        main_guard(call)()
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_loco_class_without_defects_config_fails_only_where_it_is_needed(tmp_path, capsys):
    from common.data.readers import mvtec_loco
    from common.data.synthetic_layouts import write_mvtec_loco

    root = write_mvtec_loco(str(tmp_path), ("screw_bag",), size=32, n_train=2, n_validation=1, n_test_good=1,
                            n_test_defect=1)
    os.remove(os.path.join(root, "screw_bag", "defects_config.json"))
    assert len(mvtec_loco.train_samples(root, "screw_bag")) == 2  # training never needs the config
    assert len(mvtec_loco.test_samples(root, "screw_bag")) == 3
    assert_reader_error(capsys, lambda: mvtec_loco.read_defects_config(os.path.join(root, "screw_bag")),
                        "defects_config.json", os.path.join(root, "screw_bag"))


def test_loco_channel_of_another_size(tmp_path, capsys):
    from common.data.readers import mvtec_loco
    from common.data.synthetic_layouts import write_mvtec_loco

    root = write_mvtec_loco(str(tmp_path), ("pushpins",), size=32, n_train=1, n_validation=1, n_test_good=1,
                            n_test_defect=1)
    defects = mvtec_loco.read_defects_config(os.path.join(root, "pushpins"))
    sample = next(s for s in mvtec_loco.test_samples(root, "pushpins") if s.label)
    channel = sample.mask_paths[-1]
    Image.open(channel).resize((20, 10), Image.NEAREST).save(channel)
    assert_reader_error(capsys, lambda: mvtec_loco.defect_channels(sample, defects), channel, "20x10")


def test_loco_evaluation_with_a_defect_missing_from_the_config(tmp_path, capsys):
    """The LOCO figures of an evaluation need every channel's pixel value in defects_config.json."""
    import json
    from types import SimpleNamespace

    from common.data.readers import mvtec_loco
    from common.data.synthetic_layouts import write_mvtec_loco
    from common.evaluation import loco

    root = write_mvtec_loco(str(tmp_path), ("pushpins",), size=32, n_train=1, n_validation=1, n_test_good=1,
                            n_test_defect=1)
    config_path = os.path.join(root, "pushpins", "defects_config.json")
    with open(config_path, encoding="utf-8") as handle:
        entries = [e for e in json.load(handle) if e["pixel_value"] != 255]   # drop missing_part
    with open(config_path, "w", encoding="utf-8") as handle:
        json.dump(entries, handle)
    samples = mvtec_loco.test_samples(root, "pushpins")
    dataset = SimpleNamespace(samples=samples, preprocess=None)
    maps = np.zeros((len(samples), 16, 16), np.float32)
    channel = next(s for s in samples if s.defect_type == "logical_anomalies").mask_paths[0]
    assert_reader_error(capsys, lambda: loco.loco_metrics(dataset, maps), channel, "pixel value 255",
                        "defects_config.json")
    os.remove(config_path)
    assert_reader_error(capsys, lambda: loco.loco_metrics(dataset, maps), "defects_config.json not found")


def test_visa_row_naming_a_missing_file(tmp_path, capsys):
    from common.data.readers import visa
    from common.data.synthetic_layouts import write_visa

    root = write_visa(str(tmp_path), ("fryum",), size=32, n_train=2, n_test_good=1, n_test_defect=1)
    missing = os.path.join(root, "fryum", "Data", "Masks", "Anomaly", "000.png")
    os.remove(missing)
    assert len(visa.train_samples(root, "fryum")) == 2
    assert_reader_error(capsys, lambda: visa.test_samples(root, "fryum"), missing,
                        os.path.join(root, "split_csv", "1cls.csv"))


def test_kolektor_part_without_its_label(tmp_path, capsys):
    from common.data.readers import kolektor
    from common.data.synthetic_layouts import write_kolektor

    root = write_kolektor(str(tmp_path / "KolektorSDD"), size=32, n_folders=3, n_parts=2)
    missing = os.path.join(root, "kos02", "Part1_label.bmp")
    os.remove(missing)
    assert_reader_error(capsys, lambda: kolektor.test_samples(root, "kolektor", 1), missing,
                        os.path.join(root, "kos02", "Part1.jpg"))


# =================================================================================================================
# -- one-class benchmark readers (CIFAR-10, MNIST / Fashion-MNIST, OCT2017) ---------------------------------------
# The command line does not offer these datasets yet, so the readers are called directly: each bad input must be
# ONE UserError line naming the file (or listing the valid classes). Files come from tests/one_class_files.py.
# =================================================================================================================
import gzip as _gzip  # noqa: E402
import pickle as _pickle  # noqa: E402

import one_class_files as _files  # noqa: E402
from common.core.errors import UserError as _UserError  # noqa: E402
from common.data.readers import cifar10 as _cifar10  # noqa: E402
from common.data.readers import mnist as _mnist
from common.data.readers import retina as _retina
from common.data.readers.one_class import normal_class as _normal_class  # noqa: E402


def _one_line_error(call, *fragments):
    with pytest.raises(_UserError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


@pytest.mark.parametrize("keep", [0.5, 0.02])
def test_one_class_truncated_cifar_archive(keep, tmp_path):
    archive = _files.write_cifar_archive(str(tmp_path), _files.cifar_files(_files.cifar_batches(), "py2"))
    with open(archive, "rb") as handle:
        data = handle.read()
    with open(archive, "wb") as handle:
        handle.write(data[: int(len(data) * keep)])
    _one_line_error(lambda: _cifar10.train(str(tmp_path), "cat"), archive, "truncated")


def test_one_class_damaged_cifar_batches(tmp_path):
    batches = _files.cifar_batches()
    folder = _files.write_cifar_folder(str(tmp_path), _files.cifar_files(batches, "str"))
    test_batch = os.path.join(folder, "test_batch")
    truncate(test_batch)
    _one_line_error(lambda: _cifar10.test(str(tmp_path), 0), test_batch, "not a CIFAR-10 python pickle")
    # a pickle that would run a command is refused before it runs
    marker = tmp_path / "ran"
    with open(test_batch, "wb") as handle:
        handle.write(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    _one_line_error(lambda: _cifar10.test(str(tmp_path), 0), test_batch, "os.system")
    assert not marker.exists()
    # the right pickle with the wrong content: 3072 values per row, one label per row
    data, labels = batches["test_batch"]
    with open(test_batch, "wb") as handle:
        _pickle.dump({"data": data[:, :3000], "labels": labels}, handle, protocol=2)
    _one_line_error(lambda: _cifar10.test(str(tmp_path), 0), test_batch, "uint8 (N, 3072)")
    with open(test_batch, "wb") as handle:
        _pickle.dump({"data": data, "labels": labels[:-1]}, handle, protocol=2)
    _one_line_error(lambda: _cifar10.test(str(tmp_path), 0), test_batch, "10 images but 9 labels")
    os.remove(os.path.join(folder, "data_batch_4"))
    _one_line_error(lambda: _cifar10.train(str(tmp_path), 0), os.path.join(folder, "data_batch_4"), "not found")


def test_one_class_idx_counts_disagree(tmp_path):
    arrays = _files.mnist_arrays(train_count=6, test_count=5)
    arrays["test"] = (arrays["test"][0], arrays["test"][1][:4])
    paths = _files.write_idx(str(tmp_path), arrays)
    _one_line_error(lambda: _mnist.test(str(tmp_path), 0), paths[2], paths[3], "5 images", "4 labels")


@pytest.mark.parametrize("which", ["images", "labels"])
def test_one_class_wrong_idx_magic(which, tmp_path):
    arrays = _files.mnist_arrays(train_count=6, test_count=5)
    paths = _files.write_idx(str(tmp_path), arrays)
    images, labels = arrays["train"]
    if which == "images":  # an image file with the label magic
        path, data = paths[0], _files.idx_images(images, magic=2049)
    else:                  # a label file with a little-endian magic
        path, data = paths[1], _files.idx_labels(labels, magic=0x01080000)
    with open(path, "wb") as handle:
        handle.write(_gzip.compress(data))
    _one_line_error(lambda: _mnist.train(str(tmp_path), 1), path, "magic number", "expected")


def test_one_class_truncated_idx_files(tmp_path):
    paths = _files.write_idx(str(tmp_path), _files.mnist_arrays(train_count=6, test_count=5))
    truncate(paths[0])  # the gzip stream ends early
    _one_line_error(lambda: _mnist.train(str(tmp_path), 1), paths[0], "truncated")
    plain = os.path.join(str(tmp_path), "t10k-images-idx3-ubyte")  # un-gzipped, payload cut short
    with open(plain, "wb") as handle:
        handle.write(_files.idx_images(_files.mnist_arrays(test_count=5)["test"][0])[:-10])
    _one_line_error(lambda: _mnist.test(str(tmp_path), 1), plain, "truncated")


@pytest.mark.parametrize("fmt, value, valid", [
    (_cifar10.FORMAT, "11", "9=truck"),
    (_mnist.FORMAT, "12", "0, 1, 2, 3, 4, 5, 6, 7, 8, 9"),
    (_mnist.FORMAT_FASHION, "hat", "0=T-shirt_top"),
    (_retina.FORMAT, "healthy", "0=CNV, 1=DME, 2=DRUSEN, 3=NORMAL"),
])
def test_one_class_normal_class_outside_the_dataset(fmt, value, valid, tmp_path):
    _one_line_error(lambda: _normal_class(fmt, value), value, valid)
    # the readers refuse it the same way once the data is there
    if fmt is _retina.FORMAT:
        root = _files.write_oct(str(tmp_path))
    elif fmt is _cifar10.FORMAT:
        root = str(tmp_path)
        _files.write_cifar_folder(root, _files.cifar_files(_files.cifar_batches(), "bytes"))
    else:
        root = str(tmp_path)
        _files.write_idx(root, _files.mnist_arrays())
    _one_line_error(lambda: fmt.test(root, value), value, valid)
    _one_line_error(lambda: fmt.train(root, value), value, valid)


def test_one_class_oct_missing_class_folder(tmp_path):
    root = _files.write_oct(str(tmp_path))
    shutil.rmtree(os.path.join(root, "test", "DME"))
    _one_line_error(lambda: _retina.test(root, 3), os.path.join(root, "test", "DME"), "CNV, DME, DRUSEN, NORMAL")


@pytest.mark.parametrize("dataset", ["cifar10", "fashionmnist"])
def test_download_that_fails_is_one_line_and_leaves_nothing(dataset, tmp_path, monkeypatch, capsys,
                                                           paddle_download_log):
    """``python -m common.download_dataset`` offline (Paddle's downloader replaced: it logs its attempts, then gives
    up as it does after its retries): one ``error:`` line naming the URL and the way out, exit 2, no Paddle log
    line, and the folder it created removed again."""
    import logging

    import paddle.utils.download as paddle_download

    from common.data import download

    def unreachable(url, root_dir, md5sum=None, check_exist=True, decompress=True, method="get"):
        logging.getLogger("paddle.utils.download").info("Downloading %s failed with exception", url)
        raise RuntimeError(f"Download from {url} failed. Retry limit reached")

    monkeypatch.setattr(paddle_download, "get_path_from_url", unreachable)
    root = tmp_path / "new"
    with pytest.raises(SystemExit) as info:
        download.main([dataset, str(root)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: cannot download https://")
    assert "by hand (it comes from" in lines[0] and not paddle_download_log
    assert not root.exists()
    with pytest.raises(SystemExit) as info:  # a dataset without an unattended download
        download.main(["retina", str(root)])
    assert info.value.code == 2 and not root.exists()
