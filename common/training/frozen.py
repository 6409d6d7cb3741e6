"""Frozen networks (teachers, experts, backbones) run by Paddle Inference with oneDNN during training and fitting.

A frozen network needs no autograd, and in dygraph Paddle 3.3 runs CPU convolutions on its own kernels, not
oneDNN's: a VGG16 forward at batch 64 / 128 px took 35 s in dygraph and 9.5 s through Paddle Inference with oneDNN
on 2 threads (here, under load). :class:`FrozenForward` exports the network once to a temporary folder and runs
the predictor instead; outputs come back as Paddle tensors.

The predictor holds a snapshot of the weights taken at construction: build it after the weights are loaded, for
a network whose weights no longer change. At construction a small pseudo-random batch runs both ways and the outputs
must agree (a guard against an inference-pass bug changing numbers).

Predictors are shared: a network of the same structure, input shape and weights (the next class of a ``--cls all``
loop trains against the same ImageNet teacher) gets the predictor built for the first one (:data:`_PREDICTORS`).
Paddle 3.3.1 keeps oneDNN state of the training programs per predictor that ran on the thread, so a new predictor per
class kept ~25 MB (ResNet-18, 128 px) to ~100 MB (256 px) per class in a per-class training loop; one shared
predictor keeps memory flat. On a GPU, or with ``backend="dygraph"``, the
network runs as it is under ``paddle.no_grad()``; so does a float64 network, and one whose Paddle Inference copy
disagrees (with a printed note).
"""
import collections
import hashlib
import os
import tempfile

import numpy as np

from common.core.inference import Predictor, export_static
from common.core.runtime import current_threads

BACKENDS = ("inference", "dygraph")
DEFAULT_BACKEND = "inference"  # tests set "dygraph" to compare with the plain path
AGREEMENT_RTOL = 1e-4  # oneDNN and Paddle's own kernels differ by ~1e-6 of the output scale
# (structure, input shape, threads, weights digest) -> Predictor, most recently used last; a few are kept (a loop
# over classes uses one teacher; a model with a different teacher per class would rebuild, as before)
_PREDICTORS = collections.OrderedDict()
SHARED_PREDICTORS = 2


def network_key(layer, input_shape, threads):
    """What makes two frozen networks interchangeable: their structure (the layer tree with every sublayer's
    configuration), the input shape, the thread count and a digest of every parameter and buffer."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in layer.state_dict().items():
        array = np.ascontiguousarray(tensor.numpy())
        digest.update(f"{name}:{array.dtype}:{array.shape};".encode())
        digest.update(array.data)
    return f"{type(layer).__module__}.{type(layer).__qualname__}\n{layer}", tuple(input_shape), int(threads), \
        digest.hexdigest()


def _wrapped(layer):
    """The network's forward as a fresh layer, so that ``paddle.jit.to_static`` leaves the network itself alone."""
    import paddle

    class Wrapper(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.network = layer

        def forward(self, x):
            return self.network(x)

    return Wrapper()


def _as_list(outputs):
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


class FrozenForward:
    """``forward(x)`` of a frozen ``layer`` for inputs of ``input_shape`` (C, H, W), in batches, without autograd.

    ``backend``: ``"inference"`` (Paddle Inference with oneDNN on the CPU) or ``"dygraph"``; default
    :data:`DEFAULT_BACKEND`.
    ``threads``: the predictor's CPU threads (default: the run's, :func:`common.core.runtime.current_threads`).
    Calls return what the layer returns (a tensor, or a list of tensors), as float32 Paddle tensors.
    """

    def __init__(self, layer, input_shape, threads=None, backend=None):
        import paddle

        backend = backend or DEFAULT_BACKEND
        if backend not in BACKENDS:
            raise ValueError(f"unknown frozen-network backend '{backend}', choose from {BACKENDS}")
        self.layer = layer
        self.predictor = None
        parameters = layer.parameters()
        float64 = bool(parameters) and parameters[0].dtype != paddle.float32
        if backend == "dygraph" or paddle.get_device() != "cpu" or float64:
            return
        # a fixed pseudo-random batch of 2 (not the global NumPy stream, which drives the training order)
        sample = paddle.to_tensor(np.random.default_rng(0).random((2, *input_shape), dtype=np.float32))
        was_training = layer.training
        layer.eval()
        with paddle.no_grad():
            expected = layer(sample)
        self.returns_list = isinstance(expected, (list, tuple))
        threads = threads or current_threads()
        key = network_key(layer, input_shape, threads)
        self.predictor = _PREDICTORS.pop(key, None)
        if self.predictor is None:
            spec = [paddle.static.InputSpec([None, *input_shape], "float32", name="x")]
            with tempfile.TemporaryDirectory(prefix="frozen-") as folder:
                export_static(_wrapped(layer), spec, os.path.join(folder, "inference"))
                # the predictor reads both files when it is created
                self.predictor = Predictor(folder, threads=threads, use_mkldnn=True)
        if was_training:
            layer.train()
        error = self._disagreement(expected, sample)
        if error > AGREEMENT_RTOL:
            print(f"note: the Paddle Inference copy of the frozen network differs from it by {error:.2e} of the "
                  "output scale; running it in dygraph instead (slower)")
            self.predictor = None
            return
        _PREDICTORS[key] = self.predictor
        while len(_PREDICTORS) > SHARED_PREDICTORS:
            _PREDICTORS.popitem(last=False)

    def _disagreement(self, expected, sample):
        """Largest difference between the predictor's and the layer's outputs, relative to each output's scale."""
        worst = 0.0
        for want, have in zip(_as_list(expected), self.predictor.run(sample.numpy())):
            want = want.numpy()
            error = float(np.abs(want - have).max()) / (float(np.abs(want).max()) or 1.0)
            worst = max(worst, error if np.isfinite(error) else np.inf)
        return worst

    def __call__(self, x):
        import paddle

        if self.predictor is None:
            with paddle.no_grad():
                return self.layer(x)
        outputs = [paddle.to_tensor(array) for array in self.predictor.run(x.numpy())]
        return outputs if self.returns_list else outputs[0]
