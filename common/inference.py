"""Static-graph export and the Paddle Inference predictor behind every ``infer.py``, plus a benchmark timer.

Paddle 3 saves a static model as ``PREFIX.json`` (PIR) and Paddle 2 as ``PREFIX.pdmodel``; both come with
``PREFIX.pdiparams``. :func:`find_model_files` accepts either. On CPU the predictor uses oneDNN (``enable_mkldnn``)
and the given thread count; ``Config.enable_memory_optim()`` is not called because it raises under PIR (3.3).
"""
import os
import time

import numpy as np

from .errors import UserError
from .runtime import current_threads, set_threads

MODEL_SUFFIXES = (".json", ".pdmodel")
# Written next to the exported model: what infer.py needs besides the graph (preprocessing, thresholds, method).
INFER_CONFIG = "infer_config.json"


def export_static(layer, input_spec, path_prefix):
    """``paddle.jit.to_static`` + ``paddle.jit.save`` of ``layer`` in eval mode; returns the model file written."""
    import paddle

    layer.eval()
    static = paddle.jit.to_static(layer, input_spec=input_spec, full_graph=True)
    os.makedirs(os.path.dirname(os.path.abspath(path_prefix)), exist_ok=True)
    paddle.jit.save(static, path_prefix)
    model_file, _ = find_model_files(path_prefix)
    return model_file


def save_infer_config(model_dir, config):
    """Write ``MODEL_DIR/infer_config.json`` atomically (preprocessing, thresholds, method facts)."""
    from .results import atomic_write_json

    atomic_write_json(os.path.join(model_dir, INFER_CONFIG), config)


def load_infer_config(model_dir):
    """Read ``MODEL_DIR/infer_config.json``; ``UserError`` when the folder holds no export."""
    import json

    path = os.path.join(model_dir, INFER_CONFIG)
    if not os.path.isfile(path):
        raise UserError(f"{path} not found: export the model with export_model.py first")
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


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
            # which made every dygraph op after it (a training step after common.frozen's teacher) single-threaded
            set_threads(current_threads())
        return [self._predictor.get_output_handle(name).copy_to_cpu() for name in self.output_names]


def timed(run, warmup, iterations):
    """Median seconds per call of ``run()`` after ``warmup`` untimed calls (the benchmarks' timer; the median,
    because a shared machine gives outliers)."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _rss_mb():
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


class _BuiltinTimer:
    """Records preprocess / inference / postprocess times like AutoLog's ``times`` object."""

    def __init__(self):
        self.durations = [[], [], []]
        self._stamps = []

    def start(self):
        self._stamps = [time.perf_counter()]

    def stamp(self):
        self._stamps.append(time.perf_counter())

    def end(self, stamp=False):
        if stamp:
            self.stamp()
        for i, (a, b) in enumerate(zip(self._stamps, self._stamps[1:])):
            if i < 3:
                self.durations[i].append(b - a)


class BenchmarkTimer:
    """AutoLog's ``AutoLogger`` when ``auto_log`` is installed, otherwise a built-in timer with the same report.

    Use: ``timer.start()`` before preprocessing, ``timer.stamp()`` after preprocessing and after inference,
    ``timer.end(stamp=True)`` after postprocessing, ``timer.report()`` at the end. ``warmup`` first batches are
    not counted.
    """

    def __init__(self, model_name, batch_size, data_shape, predictor=None, warmup=1):
        self.model_name, self.batch_size, self.data_shape = model_name, batch_size, list(data_shape)
        self.predictor, self.warmup, self.batches = predictor, warmup, 0
        self.start_time = time.time()
        self._autolog = None
        try:
            import auto_log  # noqa: F401 - optional, not on PyPI

            self._autolog = auto_log.AutoLogger(
                model_name=model_name, model_precision="fp32", batch_size=batch_size, data_shape=data_shape,
                save_path=None, inference_config=getattr(predictor, "config", None), pids=os.getpid(),
                process_name=None, gpu_ids=None,
                time_keys=["preprocess_time", "inference_time", "postprocess_time"], warmup=warmup)
            self.times = self._autolog.times
        except ImportError:
            self.times = _BuiltinTimer()

    def start(self):
        self.times.start()

    def stamp(self):
        self.times.stamp()

    def end(self, stamp=True):
        self.batches += 1
        if self._autolog is not None or self.batches > self.warmup:
            self.times.end(stamp=stamp)

    def report(self):
        if self._autolog is not None:
            self._autolog.report()
            return None
        pre, inf, post = ([1000.0 * float(np.mean(d)) if d else float("nan") for d in self.times.durations])
        predictor = self.predictor
        fields = {
            "model_name": self.model_name,
            "precision": "fp32",
            "device": getattr(predictor, "device", "cpu"),
            "enable_mkldnn": getattr(predictor, "use_mkldnn", None),
            "cpu_math_library_num_threads": getattr(predictor, "threads", None),
            "batch_size": self.batch_size,
            "input_shape": self.data_shape,
            "data_num": len(self.times.durations[1]) * self.batch_size,
            "cpu_rss(MB)": round(_rss_mb() or 0.0, 1),
            "total_time(s)": round(time.time() - self.start_time, 4),
            "preprocess_time(ms)": round(pre, 4),
            "inference_time(ms)": round(inf, 4),
            "postprocess_time(ms)": round(post, 4),
        }
        print("----------------------- Perf info (built-in timer; AutoLog not installed) -----------------------")
        for key, value in fields.items():
            print(f"  {key}: {value}")
        return fields


def batches(items, batch_size):
    """Split a list into consecutive batches."""
    if batch_size < 1:
        raise UserError(f"--batch_size must be at least 1, got {batch_size}")
    return [items[i:i + batch_size] for i in range(0, len(items), batch_size)]


__all__ = ["export_static", "find_model_files", "save_infer_config", "load_infer_config", "Predictor",
           "BenchmarkTimer", "batches"]
