"""Trained convolutions on oneDNN: each convolution of a trained network runs forward and backward as a small static
program lowered with oneDNN, shared by every layer of the same configuration for the life of the process."""
import contextlib
import functools
import types
import warnings

ONEDNN_CONVOLUTIONS = True  # tests set False to compare with the plain dygraph step
# (layer class, weight and bias shapes, configuration) -> its compiled program, shared by every layer of that
# configuration for the life of the process. Not one program per layer: Paddle 3.3.1 never frees a to_static program
# that ran a backward pass (its interpreter, scopes and oneDNN caches stay when the layer and the program object are
# gone), which kept ~0.55 GB per class in a per-class training loop; with programs keyed by configuration, the
# second class of a --cls all loop reuses the first class's programs and memory stays flat.
_PROGRAMS = {}
# layer attributes that name or track the layer instead of configuring its computation
_NOT_CONFIGURATION = frozenset({"_full_name", "training", "_built", "_init_in_dynamic_mode", "_cast_to_low_precision",
                                "weight", "bias"})


def is_convolution(layer):
    """``nn.Conv2D``, or a layer class that declares ``onednn_convolution = True`` (a convolution plus shape
    operations, e.g. RD4AD's ``Upsample2x2``: oneDNN's ``conv2d_transpose`` has no training kernel). Such a layer's
    ``forward`` may use only ``self.weight``, ``self.bias`` and plain attributes (numbers, strings, lists)."""
    import paddle

    return isinstance(layer, paddle.nn.Conv2D) or getattr(type(layer), "onednn_convolution", False)


@contextlib.contextmanager
def onednn_convolutions(layer):
    """Inside the block, every convolution under ``layer`` runs forward and backward on oneDNN (CPU only).

    In dygraph, Paddle 3.3 runs CPU convolutions on its own kernels, 2-3x slower than oneDNN's. Each convolution
    runs a small static program (``paddle.jit.to_static``) lowered with ``FLAGS_use_mkldnn``, which takes the
    layer's weight and bias as inputs; its backward holds oneDNN's ``conv2d_grad``. Everything between convolutions
    (BatchNorm, ReLU, losses) stays in dygraph on Paddle's kernels. Not the whole step as one oneDNN program: there
    oneDNN's BatchNorm and ReLU backward met gradients in another memory layout than their saved inputs (blocked vs.
    NHWC) and fell back to oneDNN's reference kernels - 2.4 of the 5.7 s of RD4AD's batch-4 step. Parameters stay
    the layers' own, so optimisers, checkpoints and evaluation see the same weights. The programs are shared by
    every layer of one configuration and kept for the process (see ``_PROGRAMS``); on leaving the block the layers
    are plain again and the flag is restored (left on, it crashed a later ``to_static`` program holding gradient
    ops).
    """
    import paddle

    if not ONEDNN_CONVOLUTIONS or paddle.get_device() != "cpu":
        yield
        return
    convolutions = [sub for sub in layer.sublayers(include_self=True) if is_convolution(sub)]
    for convolution in convolutions:
        key, attributes = _configuration(convolution)
        if key not in _PROGRAMS:
            _PROGRAMS[key] = paddle.jit.to_static(_program_layer(type(convolution), attributes), full_graph=True)
        # not a sublayer; the partial holds the layer only while the block runs (popped below)
        object.__setattr__(convolution, "forward", functools.partial(_run_program, _PROGRAMS[key], convolution))
    previous = paddle.get_flags("FLAGS_use_mkldnn")["FLAGS_use_mkldnn"]
    paddle.set_flags({"FLAGS_use_mkldnn": True})
    try:
        with warnings.catch_warnings():
            # each program's first run: Paddle warns that a graph tensor has no place (harmless, once per program)
            warnings.filterwarnings("ignore", message="Tensor do not have 'place' interface")
            yield
    finally:
        for convolution in convolutions:
            convolution.__dict__.pop("forward", None)  # back to the class's forward
        paddle.set_flags({"FLAGS_use_mkldnn": previous})


def compiled_programs():
    """How many convolution programs this process has compiled (bounded by the distinct configurations)."""
    return len(_PROGRAMS)


def _plain(value):
    if isinstance(value, (list, tuple)):
        return all(_plain(item) for item in value)
    return value is None or isinstance(value, (bool, int, float, str))


def _configuration(convolution):
    """``(key, attributes)``: what decides the computation of ``convolution`` besides its weights."""
    attributes = {name: value for name, value in vars(convolution).items()
                  if name not in _NOT_CONFIGURATION and _plain(value)}
    bias = getattr(convolution, "bias", None)
    key = (type(convolution), tuple(convolution.weight.shape), None if bias is None else tuple(bias.shape),
           repr(sorted(attributes.items())))
    return key, attributes


def _run_program(program, convolution, x):
    bias = getattr(convolution, "bias", None)
    return program(x, convolution.weight) if bias is None else program(x, convolution.weight, bias)


def _program_layer(layer_class, attributes):
    """``layer_class.forward`` as a layer of its own to compile, with the weights as inputs instead of parameters."""
    import paddle

    class ConvolutionProgram(paddle.nn.Layer):
        def forward(self, x, weight, bias=None):
            # the class's forward on a stand-in carrying this configuration and the given weights
            layer = types.SimpleNamespace(**dict(attributes, weight=weight, bias=bias))
            # the copy: a program whose output is a oneDNN kernel's own output fails in Paddle 3.3.1 (run_program:
            # "dst_tensor shall be defined"); it costs one pass over the output
            return paddle.assign(layer_class.forward(layer, x))

    return ConvolutionProgram()
