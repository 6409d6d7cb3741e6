"""A ``--cls all`` loop must not keep anything of a finished class (issue 23): every layer, optimiser, dataset and
frozen-network runner a class creates is freed when the class ends, and a later class of the same configuration
builds no new static program (Paddle 3.3.1 never frees one that ran, so each would stay for the process).

Checked with weak references and object counts, not with the process's memory, so the test does not depend on the
machine; ``scripts/benchmark_memory.py`` measures the memory itself."""
import gc
import traceback
import weakref

import paddle
import pytest

from common.data import synthetic
from method_harness import METHODS, command, tiny_config

CLASSES = ("c0", "c1", "c2")
# EfficientAD's tiny config distils a teacher per class; a per-class loop normally trains every class against one
# pretrained teacher (a distilled teacher per class exports its own ~1 MB frozen program each class, by design)
FIXED_TEACHER = {"efficientad": ("--teacher_weights", "random")}


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory):
    root = tmp_path_factory.mktemp("three_classes")
    synthetic.make_dataset(str(root), CLASSES, size=64, n_train=8, n_test_good=2, n_test_defect=1, seed=3)
    return str(root)


def _static_program_ops():
    """Ops of every static program alive (each op keeps the Python stack that created it)."""
    gc.collect()
    return sum(isinstance(o, traceback.StackSummary) for o in gc.get_objects())


class ClassObjects:
    """Weak references to the layers, optimisers, datasets and frozen runners created while each class runs."""

    def __init__(self, monkeypatch):
        from common.cli import commands
        from common.data.dataset import ImageDataset
        from common.training import frozen

        self.current, self.made, self.program_ops = None, {}, {}
        for cls in (paddle.nn.Layer, paddle.optimizer.Optimizer, ImageDataset, frozen.FrozenForward):
            monkeypatch.setattr(cls, "__init__", self._recording(cls.__init__))
        loop = commands.run_per_class

        def per_class(classes, run_one, what="run"):
            def recorded(cls):
                self.current = cls
                try:
                    return run_one(cls)
                finally:
                    self.current = None
                    self.program_ops[cls] = _static_program_ops()
            return loop(classes, recorded, what)

        monkeypatch.setattr(commands, "run_per_class", per_class)

    def _recording(self, init):
        def recording(obj, *args, **kwargs):
            init(obj, *args, **kwargs)
            if self.current is not None:
                self.made.setdefault(self.current, []).append(weakref.ref(obj))
        return recording

    def alive(self, cls):
        """The objects of ``cls`` still alive, except the convolution programs shared across classes by design."""
        gc.collect()
        objects = [ref() for ref in self.made.get(cls, [])]
        return [type(o).__qualname__ for o in objects if o is not None and type(o).__name__ != "ConvolutionProgram"]


@pytest.mark.slow
@pytest.mark.parametrize("package", sorted(METHODS))
def test_a_finished_class_leaves_nothing_behind(package, three_classes, tmp_path, monkeypatch):
    objects = ClassObjects(monkeypatch)
    common = ["--cls", ",".join(CLASSES), "--data_dir", three_classes, "--output_dir", tmp_path, "--threads", 2]
    command(package, "train", *common, "--config", tiny_config(package), *FIXED_TEACHER.get(package, ()))
    assert set(objects.made) == set(CLASSES)
    for cls in CLASSES:
        assert len(objects.made[cls]) > 5, cls  # the recording works: each class made its model, optimiser, ...
        assert objects.alive(cls) == [], cls
    # the last class built no static program: the convolution programs and the frozen network's predictor of the
    # earlier classes served it
    assert objects.program_ops["c2"] == objects.program_ops["c1"], METHODS[package][0]

    objects.made.clear()
    command(package, "eval", *common)
    for cls in CLASSES:
        assert objects.made[cls] and objects.alive(cls) == [], cls
    assert objects.program_ops["c2"] == objects.program_ops["c1"]
