"""Exporting a detector: one static graph + ``infer_config.json``, checked against the dygraph layer.

The graph is the method's detector layer, ``normalised images (N,3,S,S) -> (anomaly map (N,1,S,S), score (N,))``,
with everything inside (networks, statistics as buffers, map post-processing). ``infer_config.json`` beside it makes
the folder self-describing: preprocessing, thresholds, the method's configuration and how to run it, so ``infer.py``
needs nothing else. After saving, the graph is run once through Paddle Inference on random input and compared with
the dygraph layer; a relative difference above ``tolerance`` is an error.
"""
import os

import numpy as np

from common.core.errors import UserError
from common.core.files import atomic_folder
from common.core.inference import Predictor, export_static

from .folder import save_infer_config

INPUT_NAME = "x"
EXPORT_TOLERANCE = 1e-4


def export_detector(detector, preprocess, info, inference_dir, check=True, tolerance=EXPORT_TOLERANCE,
                    formats=("paddle",), reduced=None):
    """Save ``detector`` and ``info`` (method, class, thresholds, config) to ``inference_dir``, as a whole: the
    folder is replaced only when everything was written (and checked, with ``check``).

    Returns ``(model_file, {"paddle": relative difference to dygraph, "onnx": to Paddle} or None)``.
    ``detector.original_resolution`` is recorded, so ``infer.py`` compares maps at each image's own size when the
    method does. ``"onnx"`` in ``formats`` adds ``inference.onnx`` (paddle2onnx), checked with ONNX Runtime
    against the Paddle graph. The sha256 of every file is recorded for ``infer.py`` to verify.

    ``reduced`` (a :class:`Reduced`) makes a reduced-precision export: ``inference.onnx`` becomes the INT8 model (or
    stays float32 for bf16/fp16, run by OpenVINO in that precision), its accuracy against float32 is measured and
    recorded under ``accuracy`` in ``infer_config.json``, and a bound broken without ``accept_drop`` is a one-line
    error that leaves nothing written.
    """
    import paddle

    from common.core.inference import find_model_files

    from .backends import ONNX_FILE, export_onnx
    from .folder import file_digests

    height, width = preprocess.output_shape
    spec = [paddle.static.InputSpec([None, 3, height, width], "float32", name=INPUT_NAME)]
    use_mkldnn = True  # every method's graph runs with oneDNN (older exports may record False: infer.py honours it)
    differences = None
    # the folder is written and checked aside, then takes the place of an earlier export in one step: a failed
    # check or a crash leaves the earlier export as it was (common.core.files.atomic_folder)
    with atomic_folder(inference_dir) as folder:
        export_static(detector, spec, os.path.join(folder, "inference"))
        if "onnx" in formats or reduced is not None:
            export_onnx(*find_model_files(folder), folder)
        if check:
            differences = _check(detector, folder, preprocess, formats, tolerance, inference_dir)
        if reduced is not None:
            info = dict(info, **reduced.apply(folder, inference_dir))
        files = [os.path.basename(p) for p in find_model_files(folder)] + [ONNX_FILE]
        save_infer_config(folder, dict(info, preprocess=preprocess.to_dict(), use_mkldnn=use_mkldnn,
                                       original_resolution=bool(detector.original_resolution),
                                       inputs=[f"{INPUT_NAME}: preprocessed images (N,3,{height},{width})"],
                                       outputs=["anomaly_map (N,1,S,S)", "score (N,)"],
                                       files=file_digests(folder, files)))
    return os.path.join(inference_dir, os.path.basename(find_model_files(inference_dir)[0])), differences


def _check(detector, folder, preprocess, formats, tolerance, inference_dir):
    """Relative differences of the exported graph(s) in ``folder`` on random input: Paddle Inference against the
    dygraph detector, ONNX Runtime against Paddle; above the tolerance a one-line error.

    The tolerance is ``tolerance`` or, when larger, twice what input noise of 1e-6 already moves the dygraph outputs:
    KDAD's maps are input gradients through max-pools, and where a window's two largest inputs lie within float32
    rounding the gradient goes to either pixel, in dygraph as in any graph (measured: 2e-3 of the map's scale).
    One noise draw may flip no such window (a random-init KDAD model on 128 px: 6e-4 with one draw, 4.7e-3 with
    another, while its exported graph differed by 4.2e-3), so the probe takes the largest of several."""
    import paddle

    from .backends import OnnxRuntimeRunner

    x = random_input(preprocess.output_shape, preprocess.normalize)
    detector.eval()
    expected = [t.numpy() for t in detector(paddle.to_tensor(x))]
    sensitivity = max(relative_difference([t.numpy() for t in detector(paddle.to_tensor(x + noise))], expected)
                      for noise in input_noise(x.shape))
    tolerance = max(tolerance, 2 * sensitivity)
    paddle_outputs = Predictor(folder, device="cpu", use_mkldnn=True).run(x)
    differences = {"paddle": relative_difference(paddle_outputs, expected)}
    if os.path.isfile(os.path.join(folder, "inference.onnx")):
        differences["onnx"] = relative_difference(OnnxRuntimeRunner(folder).run(x), paddle_outputs)
    for name, difference in differences.items():
        if difference > tolerance:
            against = "the dygraph model" if name == "paddle" else "the Paddle graph"
            raise UserError(f"the exported {name} graph for {inference_dir} differs from {against} by "
                            f"{difference:.2e} (relative, > {tolerance:g}); nothing was written")
    return differences


def input_noise(shape, draws=4, scale=1e-6):
    """``draws`` arrays of Gaussian noise of ``scale`` (seeds 1..draws): the perturbations of the export check's
    sensitivity probe."""
    return [scale * np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
            for seed in range(1, draws + 1)]


def random_input(size, normalized=True, batch=2, seed=0):
    """A random batch in the range the detector sees: normalised images, or [0, 1] ones; ``size`` is a side or a
    (height, width) pair."""
    rng = np.random.default_rng(seed)
    height, width = (size, size) if np.isscalar(size) else size
    shape = (batch, 3, height, width)
    return (rng.standard_normal(shape) if normalized else rng.random(shape)).astype(np.float32)


def relative_difference(outputs, reference):
    """Max relative |outputs - reference| over the map and the score (each relative to its own scale)."""
    return float(max(np.abs(np.asarray(o) - r).max() / max(np.abs(r).max(), 1e-12)
                     for o, r in zip(outputs, reference)))


class Reduced:
    """A reduced-precision export: the precision, the images it is calibrated and checked on, and the bounds.

    ``calibration``: normal training images (N,3,S,S) for INT8 ranges; ``holdout``: other normal images for the
    map/score comparison; ``test_images`` + ``test_dataset``: the class's test set (or None); ``bounds`` for
    :func:`common.deploy.quantize.accuracy`; ``accept_drop``: write the export even when a bound is broken."""

    def __init__(self, precision, calibration=None, holdout=None, test_images=None, test_dataset=None, bounds=None,
                 accept_drop=False, quantizer=None, threads=None, source=None):
        from .quantize import DEFAULT_QUANTIZER

        self.precision, self.calibration, self.holdout = precision, calibration, holdout
        self.test_images, self.test_dataset, self.bounds = test_images, test_dataset, bounds
        self.accept_drop, self.quantizer, self.threads = accept_drop, quantizer or DEFAULT_QUANTIZER, threads
        self.source = source

    def apply(self, folder, inference_dir):
        """Turn the float32 export in ``folder`` into this precision; returns the ``infer_config.json`` entries.

        The accuracy check runs on every backend that can execute the precision (INT8: OpenVINO and ONNX Runtime,
        whose INT8 kernels differ); the folder records those within the bounds, and the export stops when none
        is (unless ``accept_drop``)."""
        from .backends import ONNX_FILE, OnnxRuntimeRunner, OpenVINORunner
        from .quantize import accuracy, backends_for, cpu_flags, instruction_summary, quantize_int8

        float_file = os.path.join(folder, ONNX_FILE)
        reference = OnnxRuntimeRunner(float_file, self.threads).run
        entries = {"precision": self.precision, "cpu": instruction_summary(cpu_flags())}
        model_file = float_file
        if self.precision == "int8":
            model_file = os.path.join(folder, ".int8-" + ONNX_FILE)
            quantize_int8(float_file, model_file, self.calibration, self.quantizer)
            entries.update(quantizer=self.quantizer, calibration={"images": int(len(self.calibration)),
                                                                   "source": self.source})
        floats, records, failures = {}, {}, {}
        for backend in backends_for(self.precision):
            runner = (OpenVINORunner(model_file, self.threads, self.precision) if backend == "openvino"
                      else OnnxRuntimeRunner(model_file, self.threads))
            records[backend], broken = accuracy(reference, runner.run, self.holdout, self.test_images,
                                                self.test_dataset, self.bounds, cache=floats)
            if broken:
                failures[backend] = broken
        if model_file != float_file:
            os.replace(model_file, float_file)
        passed = [b for b in records if b not in failures]
        figures = "; ".join(f"{b}: {', '.join(v)}" for b, v in failures.items())
        if not passed:
            if not self.accept_drop:
                raise UserError(f"the {self.precision} model for {inference_dir} breaks the accuracy bound: {figures}"
                                "; nothing was written (--accept_accuracy_drop writes it anyway)")
            print(f"note: accuracy bound broken and accepted: {figures}")
        elif failures:
            print(f"note: the {self.precision} model is within the bounds on {', '.join(passed)} only; {figures}")
        first = (passed or list(records))[0]
        record = dict(records[first], checked_with=f"{first} against float32 onnxruntime",
                      backends={b: {k: v for k, v in r.items() if k != "bounds"} for b, r in records.items()})
        if failures:
            record["broken"] = failures
        if not passed:
            record["accepted_drop"] = failures
        entries.update(accuracy=record, backends=passed or list(records))
        return entries
