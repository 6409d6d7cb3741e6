"""Training glue every trained method shares: the optimiser, oneDNN convolutions for the step, the epoch loop with its
NaN stop, reading saved states with one-line errors, the checks of a resumed run, and the per-epoch (or per-step)
JSON-lines training log."""
import contextlib
import json
import os
import warnings
import weakref

from .errors import UserError
from .results import atomic_write_text


def adam(parameters, learning_rate, beta1=0.9, beta2=0.999, epsilon=1e-8, weight_decay=None):
    """``paddle.optimizer.Adam`` (torch's Adam: coupled L2 ``weight_decay``) updating all parameters at once.

    ``use_multi_tensor`` fuses the per-parameter updates: on 2 CPU threads it cut RD4AD's WRN50 training step
    (batch 16, 256 px) from 8.2x to 1.9x the torch step (measured side by side), with the same losses to 2e-6.
    """
    import paddle

    return paddle.optimizer.Adam(learning_rate=learning_rate, beta1=beta1, beta2=beta2, epsilon=epsilon,
                                 weight_decay=weight_decay, parameters=parameters, use_multi_tensor=True)


ONEDNN_CONVOLUTIONS = True  # tests set False to compare with the plain dygraph step
_PROGRAMS = weakref.WeakKeyDictionary()  # convolution layer -> its compiled program, built once, kept across epochs


def is_convolution(layer):
    """``nn.Conv2D``, or a layer class that declares ``onednn_convolution = True`` (a convolution plus shape
    operations, e.g. RD4AD's ``Upsample2x2``: oneDNN's ``conv2d_transpose`` has no training kernel)."""
    import paddle

    return isinstance(layer, paddle.nn.Conv2D) or getattr(type(layer), "onednn_convolution", False)


@contextlib.contextmanager
def onednn_convolutions(layer):
    """Inside the block, every convolution under ``layer`` runs forward and backward on oneDNN (CPU only).

    In dygraph, Paddle 3.3 runs CPU convolutions on its own kernels, 2-3x slower than oneDNN's. Each convolution
    becomes its own small static program (``paddle.jit.to_static``) lowered with ``FLAGS_use_mkldnn``; its
    backward program holds oneDNN's ``conv2d_grad``. Everything between convolutions (BatchNorm, ReLU, losses) stays
    in dygraph on Paddle's kernels. Not the whole step as one oneDNN program: there oneDNN's BatchNorm and ReLU
    backward met gradients in another memory layout than their saved inputs (blocked vs. NHWC) and fell back to
    oneDNN's reference kernels - 2.4 of the 5.7 s of RD4AD's batch-4 step. Parameters stay the layers' own, so
    optimisers, checkpoints and evaluation see the same weights; on leaving the block the layers are plain again
    and the flag is restored (left on, it crashed a later ``to_static`` program holding gradient ops).
    """
    import paddle

    if not ONEDNN_CONVOLUTIONS or paddle.get_device() != "cpu":
        yield
        return
    convolutions = [sub for sub in layer.sublayers(include_self=True) if is_convolution(sub)]
    for convolution in convolutions:
        if convolution not in _PROGRAMS:
            _PROGRAMS[convolution] = paddle.jit.to_static(_program_layer(convolution), full_graph=True)
        object.__setattr__(convolution, "forward", _PROGRAMS[convolution].__call__)  # not a sublayer
    previous = paddle.get_flags("FLAGS_use_mkldnn")["FLAGS_use_mkldnn"]
    paddle.set_flags({"FLAGS_use_mkldnn": True})
    try:
        with warnings.catch_warnings():
            # each program's first run: Paddle warns that a graph tensor has no place (harmless, once per layer)
            warnings.filterwarnings("ignore", message="Tensor do not have 'place' interface")
            yield
    finally:
        for convolution in convolutions:
            convolution.__dict__.pop("forward", None)  # back to the class's forward
        paddle.set_flags({"FLAGS_use_mkldnn": previous})


def _program_layer(convolution):
    """The layer ``convolution``'s own forward as a separate layer to compile (the layer itself stays dygraph)."""
    import paddle

    class ConvolutionProgram(paddle.nn.Layer):
        def __init__(self, layer):
            super().__init__()
            # weak, and no closure over the layer: _PROGRAMS must not keep the layer (and its model) alive after
            # training, e.g. across the classes of a per-class loop
            self.layer = weakref.ref(layer)

        def forward(self, x):
            layer = self.layer()
            # the copy: a program whose output is a oneDNN kernel's own output fails in Paddle 3.3.1 (run_program:
            # "dst_tensor shall be defined"); it costs one pass over the output
            return paddle.assign(type(layer).forward(layer, x))

    return ConvolutionProgram(convolution)


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


def train_epoch(loader, batch_loss, optimizer, cls, epoch, epochs, lr, print_steps, decimals=4):
    """One epoch of ``loss = batch_loss(batch)``, backward, optimiser step; returns the mean loss over the batches.

    The logged loss is the mean over the processes of a data-parallel run. A non-finite loss stops the run with
    :class:`TrainingDiverged` (one ``error:`` line) before the optimiser applies it. Progress bar on rank 0 and a
    terminal only; every ``print_steps`` steps a line ``[CLS] epoch E step S/N loss L``.
    """
    import math

    import numpy as np
    from tqdm import tqdm

    from . import distributed

    losses = []
    steps = len(loader)
    main = distributed.is_main_process()
    bar = tqdm(loader, total=steps, desc=f"[{cls}] epoch {epoch}/{epochs}", leave=False, dynamic_ncols=True,
               disable=None if main else True)  # no bar off a terminal or off rank 0
    for step, batch in enumerate(bar, start=1):
        loss = batch_loss(batch)
        value = distributed.mean_over_processes(float(loss))
        if not math.isfinite(value):
            bar.close()
            raise TrainingDiverged(
                f"training stopped: loss is {value} at epoch {epoch}, step {step} (lr {lr}); "
                "lower --lr, check the input images, or --resume from the last saved state")
        optimizer.clear_grad()
        loss.backward()
        optimizer.step()
        losses.append(value)
        bar.set_postfix(loss=f"{value:.4f}")
        if main and step % print_steps == 0:
            bar.write(f"[{cls}] epoch {epoch} step {step}/{steps} loss {value:.{decimals}f}")
    bar.close()
    return float(np.mean(losses))


def load_state(path, what="checkpoint"):
    """``paddle.load(path)``; a missing, damaged or foreign file is a ``UserError`` naming it."""
    import paddle

    if not os.path.isfile(path):
        raise UserError(f"no {what} at {path}")
    try:
        return paddle.load(path)
    except Exception as exc:  # noqa: BLE001 - paddle.load raises many types for a foreign or damaged file
        raise UserError(f"cannot read {what} {path} ({type(exc).__name__}: {exc})") from None


def check_resume(state, config, must_match, path, done_key, total):
    """Refuse to resume ``state`` with other options than ``must_match`` names, or past ``total`` epochs/steps."""
    saved = state.get("config", {})
    changed = [f"{k} {saved.get(k)!r} -> {getattr(config, k)!r}" for k in must_match
               if saved.get(k) != getattr(config, k)]
    if changed:
        raise UserError(f"--resume: {path} was trained with other options ({'; '.join(changed)})")
    if int(state[done_key]) > int(total):
        raise UserError(f"--resume: {path} already has {state[done_key]} {done_key.split('_')[0]}, more than the "
                        f"{total} asked for")
    return int(state[done_key])


class TrainingLog:
    """``train_log.jsonl``: one JSON line per epoch (or step) keyed by ``key``; a resumed run drops later lines."""

    def __init__(self, path, key="epoch"):
        self.path, self.key = path, key

    def trim(self, last):
        """Keep the lines up to ``last`` (0: start a new log), e.g. after resuming an older state."""
        if not os.path.exists(self.path):
            return
        with open(self.path, encoding="utf-8") as handle:
            kept = [line for line in handle if line.strip() and json.loads(line)[self.key] <= last]
        atomic_write_text(self.path, "".join(kept))

    def append(self, record):
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, default=float) + "\n")
