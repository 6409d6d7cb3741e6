"""Reduced precision for exported detectors: INT8 post-training quantisation of the ONNX copy, bf16/fp16 where the
CPU computes in them, and the accuracy check that decides whether a reduced-precision export may be written.

- ``int8``: static post-training quantisation (QDQ) of ``inference.onnx``, calibrated on the class's own normal
  training images and defect-patched copies of them. Only the networks' convolutions are quantised: the input
  normalisation was done before the graph, and every map and score operation after the networks (distances,
  resizing, Gaussian blur, Mahalanobis statistics, KDAD's backward pass) stays float32 and reads float32 features. The quantised file replaces ``inference.onnx``;
  ONNX Runtime and OpenVINO both execute its INT8 operators, with different kernels, so each is checked. The
  toolchain was chosen by measurement (README, "Reduced precision"): ONNX Runtime's ``quantize_static`` (default)
  or NNCF (``--quantizer nncf``).
- ``bf16`` / ``fp16``: the float32 ONNX file, run by OpenVINO with ``INFERENCE_PRECISION_HINT`` bf16 / f16. They
  need the CPU instructions that compute in them (AVX512-BF16 or AMX-BF16; AVX512-FP16 or AMX-FP16): elsewhere one
  ``error:`` line naming what the CPU lacks (an emulated bf16 is slower than float32, so there is nothing to gain).

The accuracy check (:func:`accuracy`) compares the reduced-precision runner with the float32 one on held-back normal
images (per-image Pearson correlation of the maps, score differences relative to the float32 scores' spread) and,
when the class's test set is there, recomputes image AUROC, pixel AUROC and AU-PRO with ``common.metrics``.
"""
import os

import numpy as np

from common.core.errors import UserError

PRECISIONS = ("fp32", "int8", "bf16", "fp16")
QUANTIZERS = ("onnxruntime", "nncf")
DEFAULT_QUANTIZER = "onnxruntime"
# which CPU flags (/proc/cpuinfo) compute in each reduced float precision (OpenVINO's CPU plugin uses them)
FLOAT_FLAGS = {"bf16": ("avx512_bf16", "amx_bf16"), "fp16": ("avx512_fp16", "amx_fp16")}
# the precision hint OpenVINO gets for each precision of an exported folder
OPENVINO_HINTS = {"fp32": "f32", "int8": "f32", "bf16": "bf16", "fp16": "f16"}

# Default bounds (issue 22): the drops allowed against float32 on the test set, and without a test set the lowest
# per-image map correlation on held-back normal images (README "Reduced precision" gives the measurement behind it)
MAX_IMAGE_AUROC_DROP = 0.005
MAX_AU_PRO_DROP = 0.01
MIN_MAP_CORRELATION = 0.98
# defect-patched copies of each calibration image (with_defect_patches)
DEFECT_PATCHES = 2


def cpu_flags():
    """The instruction-set flags of this CPU (``/proc/cpuinfo``; empty where that file does not exist)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def instruction_summary(flags=None):
    """The flags that matter for reduced precision, for reports (``avx2 avx512_vnni amx_int8 ...``)."""
    flags = cpu_flags() if flags is None else flags
    wanted = ("avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_int8", "amx_bf16",
              "amx_fp16")
    return " ".join(f for f in wanted if f in flags) or "none of avx2/avx512/amx"


def check_precision(precision, device="cpu"):
    """Refuse, in one line, a precision this machine cannot compute in."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision '{precision}'; choose from {', '.join(PRECISIONS)}")
    if precision in FLOAT_FLAGS:
        if device not in ("cpu", None):
            raise UserError(f"--precision {precision} runs with OpenVINO on the CPU; export with --device cpu")
        flags = cpu_flags()
        needed = FLOAT_FLAGS[precision]
        if not any(flag in flags for flag in needed):
            raise UserError(f"--precision {precision} needs a CPU that computes in {precision} "
                            f"({' or '.join(n.upper().replace('_', '-') for n in needed)}); this CPU has neither "
                            f"(it has: {instruction_summary(flags)}); use --precision fp32 or int8")


def folder_precision(folder):
    """``(precision, validated backends or None)`` recorded in an exported folder's ``infer_config.json`` (fp32
    for older exports)."""
    import json

    path = os.path.join(folder, "infer_config.json")
    if not os.path.isfile(path):
        return "fp32", None
    with open(path, encoding="utf-8") as handle:
        info = json.load(handle)
    return info.get("precision", "fp32"), info.get("backends")


def default_backend(precision, validated=None):
    """What ``infer.py`` runs a folder with when ``--backend`` is not given: Paddle Inference for float32 exports,
    else the first backend the accuracy check passed on, OpenVINO first (README "Reduced precision")."""
    return backends_for(precision, validated)[0]


def backends_for(precision, validated=None):
    """The backends that run a folder of ``precision``; ``validated``: those its accuracy check passed on (INT8
    kernels differ between runtimes, so the export checks each one and records those within the bounds)."""
    possible = {"fp32": ("paddle", "onnxruntime", "openvino"), "int8": ("openvino", "onnxruntime")}.get(
        precision, ("openvino",))
    return tuple(b for b in possible if validated is None or b in validated)


# -- INT8 ----------------------------------------------------------------------------------------------------------
def network_convolutions(model):
    """Names of the nodes to quantise: the networks' convolutions, i.e. those with constant multi-channel weights on
    the path to the score.

    Left out: single-input-channel convolutions (the Gaussian blur of the maps, a fixed post-processing filter),
    convolutions that feed only the map and not the score (KDAD's input-gradient map, a backward pass written with
    forward convolutions: quantised, its gradients vanished and the map went flat), and every MatMul: in these graphs
    they are the bilinear resizes written as interpolation-matrix products (paddle2onnx) and the Mahalanobis
    statistics, none of them a learnt network layer."""
    initializers = {init.name: init for init in model.graph.initializer}
    producers = {output: node for node in model.graph.node for output in node.output}
    score = [o.name for o in model.graph.output if len(o.type.tensor_type.shape.dim) == 1]
    ancestors, pending = set(), list(score)
    while pending:
        node = producers.get(pending.pop())
        if node is not None and node.name not in ancestors:
            ancestors.add(node.name)
            pending.extend(node.input)
    names = []
    for node in model.graph.node:
        if node.op_type == "Conv" and (not score or node.name in ancestors):
            weight = initializers.get(node.input[1])
            if weight is not None and len(weight.dims) == 4 and weight.dims[1] > 1:
                names.append(node.name)
    return names


class _Calibration:
    """ONNX Runtime's calibration reader over preprocessed images, one at a time."""

    def __init__(self, input_name, images):
        self.input_name, self.images, self.index = input_name, images, 0

    def get_next(self):
        if self.index >= len(self.images):
            return None
        self.index += 1
        return {self.input_name: self.images[self.index - 1:self.index]}

    def rewind(self):
        self.index = 0


def with_defect_patches(images, seed=0):
    """``images`` followed by a copy of each with one defect-like patch: a rectangle (1/8 to 1/3 of the side) taken
    from another image of the set at another place, mirrored, with its contrast scaled by 0.5-2.

    Why: ranges calibrated on normal images only are the normal activations' ranges, and anomalies are exactly the
    activations outside them; clipped there, a defect's map saturates (measured on synthetic defects: pixel AUROC
    0.93 -> 0.82 with normal-only ranges). Patches cut from the class's own normal images keep the calibration on
    that class while reaching the out-of-normal activations a defect causes."""
    rng = np.random.default_rng(seed)
    count, _, height, width = images.shape
    patched = images.copy()
    for i in range(count):
        h, w = (int(rng.integers(max(1, side // 8), max(2, side // 3) + 1)) for side in (height, width))
        y0, x0, y1, x1 = (int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)),
                          int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)))
        source = images[int(rng.integers(count))][:, y1:y1 + h, x1:x1 + w][:, ::-1, ::-1]
        mean = source.mean(axis=(1, 2), keepdims=True)
        patched[i][:, y0:y0 + h, x0:x0 + w] = mean + (source - mean) * rng.uniform(0.5, 2.0)
    return np.concatenate([images, patched])


def quantize_int8(onnx_file, out_file, calibration, quantizer=DEFAULT_QUANTIZER, defect_patches=DEFECT_PATCHES):
    """Write the INT8 (QDQ) model of ``onnx_file`` calibrated on ``calibration`` (N,3,S,S) to ``out_file`` (and,
    with ``defect_patches``, on a defect-patched copy of each image: :func:`with_defect_patches`)."""
    if defect_patches:
        calibration = np.concatenate([with_defect_patches(calibration, seed)[len(calibration):]
                                      for seed in range(defect_patches)] + [calibration])
    from .backends import require

    onnx = require("onnx")
    require("onnxruntime")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # paddle2onnx writes weights as Constant nodes behind Identity nodes; ONNX Runtime's basic graph optimisation
    # folds them into initializers, which both quantizers need to see a convolution's weights as weights
    prepared = out_file + ".prepared.onnx"
    try:
        quant_pre_process(onnx_file, prepared, skip_symbolic_shape=True)
        return _quantize(onnx, prepared, out_file, calibration, quantizer)
    finally:
        if os.path.exists(prepared):
            os.remove(prepared)


def float_inputs_outside_networks(model, quantized):
    """Give every node outside ``quantized`` its float32 input back where the quantizer routed it through a
    QuantizeLinear -> DequantizeLinear pair; returns how many inputs were rewired.

    The quantizers put the pair on the tensor itself, so every consumer reads the rounded value - also the map and
    score operations that share a feature tensor with the next convolution (RD4AD's distances, KDAD's backward
    pass). KDAD's max-pool gradient routes to where the input equals the pooled maximum; with one side rounded
    nothing is equal and the map went flat (correlation 0.0; 0.995 with this rewiring)."""
    producers = {output: node for node in model.graph.node for output in node.output}
    rewired = 0
    for node in model.graph.node:
        if node.name in quantized or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for index, name in enumerate(node.input):
            dequantize = producers.get(name)
            if dequantize is None or dequantize.op_type != "DequantizeLinear":
                continue
            quantize = producers.get(dequantize.input[0])
            if quantize is not None and quantize.op_type == "QuantizeLinear":
                node.input[index] = quantize.input[0]
                rewired += 1
    return rewired


def _quantize(onnx, onnx_file, out_file, calibration, quantizer):
    model = onnx.load(onnx_file)
    nodes = network_convolutions(model)
    if not nodes:
        raise UserError(f"{onnx_file} has no network convolution to quantise")
    _run_quantizer(onnx, model, onnx_file, out_file, calibration, quantizer, nodes)
    quantized = onnx.load(out_file)
    float_inputs_outside_networks(quantized, set(nodes))
    onnx.save(quantized, out_file)
    return out_file


def _run_quantizer(onnx, model, onnx_file, out_file, calibration, quantizer, nodes):
    from .backends import require

    input_name = model.graph.input[0].name
    if quantizer == "onnxruntime":
        import onnxruntime
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        # the calibration session warns once per unused initialiser of the converted graph (hundreds of lines)
        onnxruntime.set_default_logger_severity(3)
        # unsigned activations, signed per-channel weights: the U8S8 pairing the x86 VNNI/AMX kernels take;
        # MinMax ranges (the images are normal, so outliers are the structure itself, not noise to clip)
        quantize_static(onnx_file, out_file, _Calibration(input_name, calibration), quant_format=QuantFormat.QDQ,
                        nodes_to_quantize=nodes, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    elif quantizer == "nncf":
        nncf = require("nncf")
        dataset = nncf.Dataset(list(range(len(calibration))), lambda i: {input_name: calibration[i:i + 1]})
        names = set(nodes)
        ignored = [n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul", "ConvTranspose")
                   and n.name not in names]
        quantized = nncf.quantize(model, dataset, subset_size=len(calibration),
                                  ignored_scope=nncf.IgnoredScope(names=ignored, validate=False))
        onnx.save(quantized, out_file)
    else:
        raise UserError(f"unknown quantizer '{quantizer}'; choose from {', '.join(QUANTIZERS)}")
    return out_file


# -- accuracy ------------------------------------------------------------------------------------------------------
def run_all(run, images, batch_size=8):
    """``(maps (N,S,S), scores (N,))`` of a runner over ``images`` in batches."""
    from .backends import map_and_score

    maps, scores = [], []
    for start in range(0, len(images), batch_size):
        amap, score = map_and_score(run(np.ascontiguousarray(images[start:start + batch_size])))
        maps.append(np.asarray(amap, np.float32)[:, 0])
        scores.append(np.asarray(score, np.float32).reshape(-1))
    return np.concatenate(maps), np.concatenate(scores)


def map_correlations(maps, reference):
    """Per-image Pearson correlation of the maps (1 where both maps are constant alike)."""
    out = []
    for a, b in zip(maps.reshape(len(maps), -1).astype(np.float64), reference.reshape(len(reference), -1)):
        a, b = a - a.mean(), b - b.mean()
        denominator = np.sqrt((a * a).sum() * (b * b).sum())
        out.append(float((a * b).sum() / denominator) if denominator > 0 else float(np.allclose(a, b)))
    return np.asarray(out)


def compare(maps, scores, reference_maps, reference_scores):
    """Map correlation and score deltas of reduced-precision outputs against float32 ones."""
    correlations = map_correlations(maps, reference_maps)
    spread = float(np.std(reference_scores)) or float(np.abs(reference_scores).mean()) or 1.0
    deltas = np.abs(scores.astype(np.float64) - reference_scores)
    return {"images": int(len(scores)), "map_correlation_min": round(float(correlations.min()), 6),
            "map_correlation_mean": round(float(correlations.mean()), 6),
            "score_delta_max": float(deltas.max()), "score_delta_mean": float(deltas.mean()),
            "score_delta_max_over_score_std": round(float(deltas.max() / spread), 6)}


def test_metrics(dataset, maps, scores):
    """Image AUROC, pixel AUROC (with masks) and AU-PRO of maps and scores on a test dataset (common.metrics)."""
    from common import metrics as common_metrics

    masks = dataset.masks() if dataset.has_masks else None
    protocols = ("image_auroc", "pixel_auroc", "au_pro") if masks is not None else ("image_auroc",)
    result = common_metrics.evaluate(dataset.labels, scores, masks, maps if masks is not None else None,
                                     protocols=protocols)
    result.pop("notes", None)
    return {name: (None if value is None else round(float(value), 6)) for name, value in result.items()}


def accuracy(reference, run, holdout, test_images=None, test_dataset=None, bounds=None, cache=None):
    """The accuracy record of ``run`` against float32 and the list of bounds it breaks.

    ``reference``: the float32 runner; ``cache``: a dict keeping its outputs, so the checks of several backends
    share one float32 pass. ``holdout``: held-back
    normal images (N,3,S,S). ``test_images``/``test_dataset``: the class's preprocessed test images and their
    dataset (labels, masks), or None. ``bounds``: ``max_image_auroc_drop``, ``max_au_pro_drop``,
    ``min_map_correlation``; with a test set the AUROC and AU-PRO drops are enforced, without one the map
    correlation."""
    bounds = dict({"max_image_auroc_drop": MAX_IMAGE_AUROC_DROP, "max_au_pro_drop": MAX_AU_PRO_DROP,
                   "min_map_correlation": MIN_MAP_CORRELATION}, **(bounds or {}))
    cache = {} if cache is None else cache

    def float32(name, images):
        if name not in cache:
            cache[name] = run_all(reference, images)
        return cache[name]

    held = run_all(run, holdout)
    if not all(np.isfinite(a).all() for a in held):  # e.g. fp16 overflowing in a distance: nothing to compare
        return {"bounds": bounds, "finite": False}, ["outputs not finite (NaN or Inf) on held-back normal images"]
    record = {"bounds": bounds, "held_back_normal": compare(*held, *float32("holdout", holdout))}
    broken = []
    if test_dataset is not None:
        floats = float32("test", test_images)
        reduced = run_all(run, test_images)
        if not all(np.isfinite(a).all() for a in reduced):
            return dict(record, finite=False), ["outputs not finite (NaN or Inf) on the test set"]
        before, after = test_metrics(test_dataset, *floats), test_metrics(test_dataset, *reduced)
        record["test_set"] = dict(compare(*reduced, *floats), float32=before, reduced=after,
                                  drop={k: (None if before[k] is None or after[k] is None
                                            else round(before[k] - after[k], 6)) for k in before})
        for name, bound in (("image_auroc", "max_image_auroc_drop"), ("au_pro", "max_au_pro_drop")):
            drop = record["test_set"]["drop"].get(name)
            if drop is not None and drop > bounds[bound]:
                broken.append(f"{name} {before[name]:.4f} -> {after[name]:.4f} (drop {drop:.4f} > {bounds[bound]})")
        record["enforced"] = "test set: image AUROC and AU-PRO drops"
    else:
        low = record["held_back_normal"]["map_correlation_min"]
        if low < bounds["min_map_correlation"]:
            broken.append(f"map correlation on held-back normal images {low:.4f} < {bounds['min_map_correlation']}")
        record["enforced"] = "no test set: map correlation on held-back normal images"
    return record, broken
