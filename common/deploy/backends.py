"""Deployment beyond Paddle Inference: the ONNX copy of an exported graph, ONNX Runtime and OpenVINO runners, and
the integrity check of exported folders.

Every runner has ``run(x) -> [anomaly map, score]`` like :class:`common.core.inference.Predictor`. ``paddle2onnx``
converts Paddle 3's ``inference.json`` (OpenVINO's own Paddle reader refuses that format, so OpenVINO runs the ONNX
file). Each package is optional: a missing one is one line naming it.
"""
import os

from common.core.errors import UserError

ONNX_FILE = "inference.onnx"
ONNX_OPSET = 13
BACKENDS = ("paddle", "onnxruntime", "openvino")
PACKAGES = {"paddle2onnx": "paddle2onnx", "onnxruntime": "onnxruntime", "openvino": "openvino"}


def require(module):
    """Import an optional package, or a ``UserError`` naming what to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{module} is not installed: pip install {PACKAGES.get(module, module)} "
                        "(or pip install -r requirements-deploy.txt)") from None


# -- ONNX ----------------------------------------------------------------------------------------------------------
def export_onnx(model_file, params_file, folder):
    """Convert the exported Paddle graph to ``FOLDER/inference.onnx`` with paddle2onnx; returns its path.

    The conversion runs in a child process: paddle2onnx aborts the whole process (SIGABRT) on an operator it cannot
    convert (e.g. a gradient operator such as conv2d_grad), which here becomes one ``UserError`` line instead.
    """
    import subprocess
    import sys

    require("paddle2onnx")
    path = os.path.join(folder, ONNX_FILE)
    tmp = os.path.join(folder, ".tmp-" + ONNX_FILE)
    code = ("import sys, paddle2onnx; paddle2onnx.export(sys.argv[1], sys.argv[2], save_file=sys.argv[3], "
            f"opset_version={ONNX_OPSET}, verbose=False, optimize_tool='None')")
    try:
        run = subprocess.run([sys.executable, "-c", code, model_file, params_file, tmp], capture_output=True,
                             text=True, stdin=subprocess.DEVNULL)
        if run.returncode or not os.path.isfile(tmp):
            reasons = [line.strip() for line in (run.stdout + run.stderr).splitlines() if "ERROR" in line
                       or "not supported" in line.lower() or "unsupported" in line.lower()]
            raise UserError(f"paddle2onnx cannot convert the graph in {folder}: "
                            f"{'; '.join(reasons[-3:]) or f'exit status {run.returncode}'}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


class OnnxRuntimeRunner:
    """ONNX Runtime on the CPU with ``threads`` intra-op threads; ``folder`` may also be an ``.onnx`` file."""

    name = "onnxruntime"

    def __init__(self, folder, threads=None):
        from common.core.runtime import default_threads

        ort = require("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads = int(threads or default_threads())
        options.log_severity_level = 3  # no warnings about unused initialisers of the converted graph
        self.session = ort.InferenceSession(onnx_path(folder), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.device, self.use_mkldnn, self.config = "cpu", None, None

    def run(self, x):
        return self.session.run(None, {self.input_name: x})


class OpenVINORunner:
    """OpenVINO on the CPU. Float operators run in float32 (OpenVINO's default may be bf16 on CPUs that have it)
    unless ``precision`` is bf16/fp16 (exports made with ``--precision bf16|fp16``); the INT8 operators of a
    quantised file run in INT8 either way. ``folder`` may also be an ``.onnx`` file."""

    name = "openvino"

    def __init__(self, folder, threads=None, precision="fp32"):
        from common.core.runtime import default_threads

        from .quantize import OPENVINO_HINTS

        ov = require("openvino")
        self.threads = int(threads or default_threads())
        self.model = ov.Core().compile_model(onnx_path(folder), "CPU", {
            "INFERENCE_PRECISION_HINT": OPENVINO_HINTS[precision], "INFERENCE_NUM_THREADS": self.threads})
        self.device, self.use_mkldnn, self.config = "cpu", None, None

    def run(self, x):
        return list(self.model([x]).values())


def onnx_path(folder):
    if folder.endswith(".onnx") and os.path.isfile(folder):
        return folder
    path = os.path.join(folder, ONNX_FILE)
    if not os.path.isfile(path):
        raise UserError(f"no {ONNX_FILE} in {folder}: export it with export_model.py --format onnx")
    return path


def make_runner(folder, backend="paddle", device="cpu", threads=None, use_mkldnn=True):
    """The runner of ``backend`` for an exported folder (of any precision: ``infer_config.json`` says which; a
    backend that cannot run it is one line naming those that can)."""
    from .quantize import backends_for, folder_precision

    precision, validated = folder_precision(folder)
    if backend not in backends_for(precision, validated):
        allowed = " or ".join(backends_for(precision, validated))
        why = "" if backend not in backends_for(precision) else " (its accuracy check failed on that backend)"
        raise UserError(f"the {precision} model in {folder} runs with --backend {allowed}, not {backend}{why}")
    if backend == "paddle":
        from common.core.inference import Predictor

        return Predictor(folder, device=device, threads=threads, use_mkldnn=use_mkldnn)
    if device not in ("cpu", None):
        raise UserError(f"--backend {backend} runs on the CPU here; use --backend paddle for --device {device}")
    if backend == "onnxruntime":
        return OnnxRuntimeRunner(folder, threads)
    if backend == "openvino":
        return OpenVINORunner(folder, threads, precision)
    raise UserError(f"unknown backend '{backend}'; choose from {', '.join(BACKENDS)}")


def backend_files(folder, backend):
    """The files ``backend`` loads from an exported folder (for :func:`verify_files`)."""
    if backend == "paddle":
        from common.core.inference import find_model_files

        return [os.path.basename(path) for path in find_model_files(folder)]
    return [ONNX_FILE]


def map_and_score(outputs):
    """The (N,1,S,S) map and the (N,) score among a runner's outputs (their order is the backend's)."""
    return next(o for o in outputs if o.ndim == 4), next(o for o in outputs if o.ndim == 1)
