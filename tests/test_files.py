"""Durable saves (issue 25): every final file reaches the disk before its rename and its folder after it, a failure
between the write and the rename leaves the old file and no temporary one, a whole exported folder is replaced in
one step, and a training log whose last line was cut by a crash is read without it."""
import json
import os

import pytest

from common.core import files
from common.training.log import TrainingLog


@pytest.fixture
def events(monkeypatch):
    """Record the order of fsync calls (by path) and renames."""
    happened = []
    fsync, replace, rename = os.fsync, os.replace, os.rename

    def recording_fsync(fd):
        happened.append(("fsync", os.readlink(f"/proc/self/fd/{fd}") if os.path.isdir("/proc/self/fd") else fd))
        return fsync(fd)

    def recording_replace(src, dst):
        happened.append(("rename", str(dst)))
        return replace(src, dst)

    def recording_rename(src, dst):
        happened.append(("rename", str(dst)))
        return rename(src, dst)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    monkeypatch.setattr(os, "rename", recording_rename)
    return happened


@pytest.mark.parametrize("write", ["json", "save"])
def test_the_data_reaches_the_disk_before_the_rename_and_the_folder_after(tmp_path, events, write):
    path = tmp_path / "thresholds.json"
    if write == "json":
        files.atomic_write_json(str(path), {"a": 1})
    else:
        files.atomic_save(lambda tmp: open(tmp, "w").write('{"a": 1}'), str(path))
    kinds = [kind for kind, _ in events]
    rename_at = kinds.index("rename")
    assert events[rename_at][1] == str(path)
    written = [p for kind, p in events[:rename_at] if kind == "fsync"]
    assert written and os.path.basename(written[-1]).startswith(files.TEMPORARY_PREFIX)  # the data, then the rename
    assert ("fsync", str(tmp_path)) in events[rename_at:]  # then the folder's new entry
    assert json.loads(path.read_text()) == {"a": 1}


@pytest.mark.parametrize("write", ["bytes", "save", "folder"])
def test_a_failure_between_the_write_and_the_rename_keeps_the_old_file(tmp_path, monkeypatch, write):
    target = tmp_path / ("inference" if write == "folder" else "model.pdparams")
    if write == "folder":
        target.mkdir()
        (target / "inference.json").write_text("old")
    else:
        target.write_text("old")

    def power_cut(*args):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", power_cut)
    monkeypatch.setattr(os, "rename", power_cut)
    monkeypatch.setattr(files, "_exchange", lambda first, second: power_cut())
    with pytest.raises(OSError):
        if write == "bytes":
            files.atomic_write_bytes(str(target), b"new")
        elif write == "save":
            files.atomic_save(lambda tmp: open(tmp, "w").write("new"), str(target))
        else:
            with files.atomic_folder(str(target)) as tmp:
                with open(os.path.join(tmp, "inference.json"), "w") as handle:
                    handle.write("new")
    old = target / "inference.json" if write == "folder" else target
    assert old.read_text() == "old"
    assert os.listdir(tmp_path) == [target.name]  # no temporary file or folder left


def test_an_exported_folder_is_replaced_whole(tmp_path):
    target = tmp_path / "inference"
    target.mkdir()
    (target / "stale.onnx").write_text("old")
    with files.atomic_folder(str(target)) as tmp:
        with open(os.path.join(tmp, "inference.json"), "w") as handle:
            handle.write("new")
    assert sorted(os.listdir(target)) == ["inference.json"] and os.listdir(tmp_path) == ["inference"]


def test_temporaries_of_a_killed_save_are_removed(tmp_path):
    (tmp_path / ".tmp-abcmodel.pdparams").write_text("half")
    (tmp_path / ".tmp-xyzinference").mkdir()
    (tmp_path / "model.pdparams").write_text("whole")
    assert files.remove_temporaries(str(tmp_path)) == [".tmp-abcmodel.pdparams", ".tmp-xyzinference"]
    assert os.listdir(tmp_path) == ["model.pdparams"]


def test_a_train_log_whose_last_line_was_cut_is_read_without_it(tmp_path, capsys):
    log = TrainingLog(str(tmp_path / "train_log.jsonl"))
    for epoch in (1, 2, 3):
        log.append({"epoch": epoch, "loss": 1.0 / epoch})
    with open(log.path, "a", encoding="utf-8") as handle:
        handle.write('{"epoch": 4, "lo')  # killed mid-write
    assert [r["epoch"] for r in log.records()] == [1, 2, 3]
    assert "cut mid-write" in capsys.readouterr().out
    log.trim(2)  # a resumed run continues from the state after epoch 2
    log.append({"epoch": 3, "loss": 0.3})
    assert [json.loads(line)["epoch"] for line in open(log.path, encoding="utf-8")] == [1, 2, 3]
    assert log.last("loss") == 0.3


def test_saved_files_and_folders_get_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        files.atomic_write_text(str(tmp_path / "a.json"), "{}")
        with files.atomic_folder(str(tmp_path / "inference")) as folder:
            open(os.path.join(folder, "x"), "w").close()
    finally:
        os.umask(umask)
    assert os.stat(tmp_path / "a.json").st_mode & 0o777 == 0o644
    assert os.stat(tmp_path / "inference").st_mode & 0o777 == 0o755


class _ToyDetector:
    """A detector layer: images -> (map, score), exportable."""

    @staticmethod
    def make(scale):
        import paddle

        class Toy(paddle.nn.Layer):
            original_resolution = False

            def __init__(self):
                super().__init__()
                self.scale = self.create_parameter([1], default_initializer=paddle.nn.initializer.Constant(scale))

            def forward(self, x):
                amap = paddle.mean(x, axis=1, keepdim=True) * self.scale
                return amap, paddle.max(amap.reshape([amap.shape[0], -1]), axis=1)

        return Toy()


def test_an_export_that_differs_from_the_model_is_refused_and_the_earlier_export_kept(tmp_path, monkeypatch):
    from common.core.errors import UserError
    from common.data.transforms import Preprocess
    from common.deploy import export as export_module

    preprocess = Preprocess(resize=16)
    folder = tmp_path / "inference"
    export_module.export_detector(_ToyDetector.make(2.0), preprocess, {"method": "Toy"}, str(folder))
    before = {name: (folder / name).read_bytes() for name in os.listdir(folder)}
    real_export = export_module.export_static
    # the graph written is not the model's (another scale): the check must refuse it and write nothing
    monkeypatch.setattr(export_module, "export_static",
                        lambda layer, spec, prefix: real_export(_ToyDetector.make(2.5), spec, prefix))
    with pytest.raises(UserError, match="differs from the dygraph model"):
        export_module.export_detector(_ToyDetector.make(3.0), preprocess, {"method": "Toy"}, str(folder))
    assert {name: (folder / name).read_bytes() for name in os.listdir(folder)} == before
    assert os.listdir(tmp_path) == ["inference"]
