"""Timers of the benchmarks and of ``infer.py --benchmark``."""
import os
import time

import numpy as np


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
