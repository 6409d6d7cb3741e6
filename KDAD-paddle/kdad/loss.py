"""MKD training loss and per-image detection score (official ``loss_functions.py`` and ``test_functions.py``).

Per critical tap i, with ``e``/``c`` the expert/cloner outputs flattened per image over C*H*W:

- direction term ``1 - cos(c, e)`` (``torch.nn.CosineSimilarity()`` on the flattened maps, eps 1e-8);
- value term ``mean((c - e) ** 2)`` over C*H*W (``nn.MSELoss()``, which averages over the batch too).

Forms (``form=``):

- ``"code"`` (default, official ``MseDirectionLoss(lamda)``): ``sum_i direction_i + lamda * sum_i value_i``;
- ``"paper"`` (the paper's ``L_val + lamda * L_dir``): ``sum_i value_i + lamda * sum_i direction_i``;
- ``"direction"`` (official ``DirectionOnlyLoss``, ``direction_loss_only: True``): ``sum_i direction_i``.

Training sums the four taps pool2 .. pool5 and averages over the batch; the detection score of one image
(``detection_test``) sums pool3 .. pool5 only. The saliency loss of ``grad_calc``/``VanillaSaliency`` is the
detection score of a batch of one, so summing :func:`detection_scores` over a batch gives every image its own
input gradient (the cloner runs in eval mode, so images do not interact).

Reductions are done in float64: ``1 - cos`` of two well-aligned float32 maps loses most of its digits to
cancellation in float32, and the official numbers come from float32 GPU sums whose error is below that of a
float64 computation anyway. Results come back in the taps' dtype (float32 normally).
"""
import math

import paddle

FORMS = ("code", "paper", "direction")
DEFAULT_LAMDA = 0.5  # MVTec value (configs: "mvtec: 0.5, Others: 0.01")
COSINE_EPS = 1e-8
TRAIN_TAPS = (0, 1, 2, 3)  # positions in the 4-tap lists: pool2, pool3, pool4, pool5
SCORE_TAPS = (1, 2, 3)     # pool3, pool4, pool5

# ``paddle.jit.not_to_static``: plain tensor code that the detector's exported graph calls as it is (dy2static's
# rewrite of these functions fails on module constants used as default arguments).


@paddle.jit.not_to_static
def _check_taps(expert_taps, cloner_taps):
    if len(expert_taps) != 4 or len(cloner_taps) != 4:
        raise ValueError(f"expected the 4 critical taps (pool2..pool5) of each network, got "
                         f"{len(expert_taps)} expert and {len(cloner_taps)} cloner taps")


@paddle.jit.not_to_static
def tap_terms(expert, cloner):
    """Per-image ``(direction, value)`` terms of one tap, each (N,) float64.

    ``direction = 1 - <c, e> / (max(|c|, eps) * max(|e|, eps))`` (torch's cosine similarity, which clamps each
    norm at eps); ``value = mean over C*H*W of (c - e)^2``.
    """
    # reshape, not flatten: in a graph run by Paddle Inference with oneDNN (3.3.1), flatten followed by a cast
    # to float64 reads a oneDNN-blocked tensor in the wrong element order and the terms come out wrong.
    e = paddle.reshape(expert, [0, -1]).astype("float64")
    c = paddle.reshape(cloner, [0, -1]).astype("float64")
    dot = paddle.sum(c * e, axis=1)
    norm_c = paddle.clip(paddle.sqrt(paddle.sum(c * c, axis=1)), min=COSINE_EPS)
    norm_e = paddle.clip(paddle.sqrt(paddle.sum(e * e, axis=1)), min=COSINE_EPS)
    direction = 1.0 - dot / (norm_c * norm_e)
    value = paddle.mean(paddle.square(c - e), axis=1)
    return direction, value


@paddle.jit.not_to_static
def per_image_terms(expert_taps, cloner_taps, taps=TRAIN_TAPS):
    """``(direction, value)``: two (N, len(taps)) float64 tensors of the per-image terms of the chosen taps."""
    _check_taps(expert_taps, cloner_taps)
    terms = [tap_terms(expert_taps[i], cloner_taps[i]) for i in taps]
    return paddle.stack([d for d, _ in terms], axis=1), paddle.stack([v for _, v in terms], axis=1)


@paddle.jit.not_to_static
def combine_terms(direction, value, lamda=DEFAULT_LAMDA, form="code"):
    """Per-image total (N,) from per-tap terms (N, T) according to ``form`` (see module docstring)."""
    if form == "code":
        return paddle.sum(direction, axis=1) + lamda * paddle.sum(value, axis=1)
    if form == "paper":
        return paddle.sum(value, axis=1) + lamda * paddle.sum(direction, axis=1)
    if form == "direction":
        return paddle.sum(direction, axis=1)
    raise ValueError(f"unknown loss form '{form}', choose from {FORMS}")


@paddle.jit.not_to_static
def detection_scores(expert_taps, cloner_taps, lamda=DEFAULT_LAMDA, form="code"):
    """Per-image anomaly scores (N,) in the taps' dtype: official ``detection_test``'s ``total_loss`` (pool3 .. pool5).

    ``form="code"``: ``sum_{pool3..5} [1 - cos + lamda * mean (c - e)^2]``; ``"direction"`` drops the value
    term (``direction_loss_only``); ``"paper"`` swaps where ``lamda`` goes (not in the official code).
    """
    direction, value = per_image_terms(expert_taps, cloner_taps, SCORE_TAPS)
    return combine_terms(direction, value, lamda, form).astype(cloner_taps[0].dtype)


FORM_WEIGHTS = {"code": lambda lamda: (1.0, lamda), "paper": lambda lamda: (lamda, 1.0),
                "direction": lambda lamda: (1.0, 0.0)}


@paddle.jit.not_to_static
def tap_gradients(expert, cloner, lamda=DEFAULT_LAMDA, form="code"):
    """``(d/d expert, d/d cloner)`` of the per-image ``w_d * direction + w_v * value`` of one tap, in the taps' dtype.

    ``(w_d, w_v)`` are the weights ``form`` gives the terms (``code``: 1, lamda). With ``n_c = max(|c|, eps)``,
    ``n_e = max(|e|, eps)`` and ``p`` = C*H*W: ``d direction / dc = -e / (n_c n_e) + [|c| > eps] <c, e> c / (n_c^3 n_e)``
    (and the same with c and e swapped), ``d value / dc = 2 (c - e) / p = -d value / de``. Computed in float64
    like the terms, for the same reason (cancellation when the cloner follows the expert closely). This is the
    analytic start of :func:`kdad.model.chain_input_gradient`; the tests check it against autograd.
    """
    weight_direction, weight_value = FORM_WEIGHTS[form](lamda)
    shape = [-1] + list(cloner.shape[1:])
    elements = math.prod(shape[1:])  # from the 4-D shape: after reshape([0, -1]) a static graph has -1 there
    e = paddle.reshape(expert, [0, -1]).astype("float64")
    c = paddle.reshape(cloner, [0, -1]).astype("float64")
    dot = paddle.sum(c * e, axis=1, keepdim=True)
    length_c = paddle.sqrt(paddle.sum(c * c, axis=1, keepdim=True))
    length_e = paddle.sqrt(paddle.sum(e * e, axis=1, keepdim=True))
    norm_c, norm_e = paddle.clip(length_c, min=COSINE_EPS), paddle.clip(length_e, min=COSINE_EPS)
    # The weights enter as (1, 1) tensors, not as Python numbers: Paddle Inference's oneDNN pass
    # operator_scale_onednn_fuse_pass folds a `scale` op (tensor * number) into the preceding elementwise op, and
    # the float64 (non-oneDNN) kernel then ignores it (3.3.1: the expert's gradient came out 78x too large); and
    # number / tensor becomes full_batch_size_like, which paddle2onnx 2.1 cannot convert.
    inverse = paddle.reciprocal(norm_c * norm_e) * paddle.full([1, 1], weight_direction, dtype="float64")
    # the clipped norm is a constant: its length term then has no derivative
    along_c = (length_c > COSINE_EPS).astype("float64") * dot * inverse / (norm_c * norm_c)
    along_e = (length_e > COSINE_EPS).astype("float64") * dot * inverse / (norm_e * norm_e)
    to_cloner = along_c * c - inverse * e
    to_expert = along_e * e - inverse * c
    if weight_value:
        difference = (c - e) * paddle.full([1, 1], 2.0 * weight_value / elements, dtype="float64")
        to_cloner, to_expert = to_cloner + difference, to_expert - difference
    return (paddle.reshape(to_expert.astype(expert.dtype), shape),
            paddle.reshape(to_cloner.astype(cloner.dtype), shape))


class MseDirectionLoss(paddle.nn.Layer):
    """Official training loss ``MseDirectionLoss(lamda)`` over pool2 .. pool5; ``forward`` -> scalar (taps' dtype).

    Batch mean of the per-image total, which equals the official sum of batch-mean direction terms plus
    ``lamda`` times the ``nn.MSELoss`` terms (every image has the same number of elements).
    """

    def __init__(self, lamda=DEFAULT_LAMDA, form="code"):
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"unknown loss form '{form}', choose from {FORMS}")
        self.lamda, self.form = float(lamda), form

    def forward(self, expert_taps, cloner_taps):
        direction, value = per_image_terms(expert_taps, cloner_taps, TRAIN_TAPS)
        return paddle.mean(combine_terms(direction, value, self.lamda, self.form)).astype(cloner_taps[0].dtype)

    def terms(self, expert_taps, cloner_taps):
        """Batch means of the 4 direction and 4 value terms, two (4,) float64 tensors (for logs and checks)."""
        direction, value = per_image_terms(expert_taps, cloner_taps, TRAIN_TAPS)
        return paddle.mean(direction, axis=0), paddle.mean(value, axis=0)
