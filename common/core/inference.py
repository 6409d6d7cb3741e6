"""Static graphs: export a layer with ``paddle.jit`` and run the saved graph with Paddle Inference.

Paddle 3 saves a static model as ``PREFIX.json`` (PIR) and Paddle 2 as ``PREFIX.pdmodel``; both come with
``PREFIX.pdiparams``. :func:`find_model_files` accepts either. On CPU the predictor uses oneDNN (``enable_mkldnn``)
and the given thread count; ``Config.enable_memory_optim()`` is not called because it raises under PIR (3.3).
Used by the frozen networks of training (:mod:`common.training.frozen`) and by every deployment backend.
"""
import os

import numpy as np

from .errors import UserError
from .runtime import current_threads, set_threads

MODEL_SUFFIXES = (".json", ".pdmodel")


def export_static(layer, input_spec, path_prefix):
    """``paddle.jit.to_static`` + ``paddle.jit.save`` of ``layer`` in eval mode; returns the model file written."""
    import paddle

    layer.eval()
    static = paddle.jit.to_static(layer, input_spec=input_spec, full_graph=True)
    os.makedirs(os.path.dirname(os.path.abspath(path_prefix)), exist_ok=True)
    paddle.jit.save(static, path_prefix)
    model_file, _ = find_model_files(path_prefix)
    return model_file


def find_model_files(model_path, prefix="inference"):
    """``(model_file, params_file)`` for a model folder, a path prefix, or a model file (.json or .pdmodel)."""
    candidates = []
    if os.path.isdir(model_path):
        candidates = [os.path.join(model_path, prefix)]
        candidates += sorted(os.path.join(model_path, os.path.splitext(f)[0]) for f in os.listdir(model_path)
                             if f.endswith(".pdiparams"))
    else:
        root, ext = os.path.splitext(model_path)
        candidates = [root if ext in MODEL_SUFFIXES + (".pdiparams",) else model_path]
    for stem in candidates:
        for suffix in MODEL_SUFFIXES:
            if os.path.isfile(stem + suffix) and os.path.isfile(stem + ".pdiparams"):
                return stem + suffix, stem + ".pdiparams"
    raise UserError(f"no exported model in {model_path} (expected {prefix}.json or {prefix}.pdmodel with "
                    f"{prefix}.pdiparams); run export_model.py first")


class Predictor:
    """A Paddle Inference predictor: ``run(*arrays)`` returns the outputs as NumPy arrays."""

    def __init__(self, model_dir, device="cpu", threads=None, use_mkldnn=True, gpu_mem_mb=500):
        from paddle import inference

        from .runtime import default_threads, resolve_device

        self.model_file, self.params_file = find_model_files(model_dir)
        config = inference.Config(self.model_file, self.params_file)
        self.device = resolve_device(device)
        self.threads = int(threads or default_threads())
        self.use_mkldnn = bool(use_mkldnn) and self.device == "cpu"
        if self.device.startswith("gpu"):
            gpu_id = int(self.device.split(":")[1]) if ":" in self.device else 0
            config.enable_use_gpu(gpu_mem_mb, gpu_id)
        else:
            config.disable_gpu()
            config.set_cpu_math_library_num_threads(self.threads)
            if self.use_mkldnn:
                config.enable_mkldnn()
            else:  # Paddle 3 turns oneDNN on by default for CPU inference
                config.disable_mkldnn()
        config.switch_ir_optim(True)
        config.disable_glog_info()
        self.config = config
        self._predictor = inference.create_predictor(config)
        self.input_names = self._predictor.get_input_names()
        self.output_names = self._predictor.get_output_names()

    def run(self, *arrays):
        if len(arrays) != len(self.input_names):
            raise ValueError(f"model takes {len(self.input_names)} inputs, got {len(arrays)}")
        for name, array in zip(self.input_names, arrays):
            self._predictor.get_input_handle(name).copy_from_cpu(np.ascontiguousarray(array))
        self._predictor.run()
        if self.device == "cpu":
            # Paddle 3.3.1: a predictor's run leaves the calling thread's math library (MKL, OpenMP) on one thread,
            # which made every dygraph op after it (a training step after common.training.frozen's teacher) single-threaded
            set_threads(current_threads())
        return [self._predictor.get_output_handle(name).copy_to_cpu() for name in self.output_names]
