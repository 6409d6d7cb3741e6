"""KDAD-paddle (MKD, Salehi et al. CVPR 2021) against an independent PyTorch statement of the official code.

The reference below restates Niousha12/Knowledge_Distillation_AD (``models/network.py``, ``loss_functions.py``,
``test_functions.py``, ``utils/utils.py``) in plain PyTorch/NumPy: the cloner of ``make_arch('B', ...)`` with its
13 taps, the ``Vgg16`` expert taps, ``MseDirectionLoss``, ``detection_test``'s scores, the per-image saliency loop of
``grad_calc``/``VanillaSaliency``, ``generate_smooth_grad`` (with its noise std bug), ``GuidedBackprop`` (ReLU hooks
on the cloner), ``convert_to_grayscale`` and ``gaussian_filter(sigma=4)``. Random torch weights are converted to
Paddle. (The official metrics, which need no torch, are in test_kdad_metric_reference.py.)

Networks, loss and scores are compared in float32 at 128 px (1e-4 / 1e-5 relative). The saliency maps and the
Adam steps are compared in float64 on both sides (see ``models64``: max-pool/ReLU gradients flip at float32
near-ties), plus a float32 Adam run that must stay within torch's own float32-vs-float64 spread. The SmoothGrad
noise is drawn once and given to both sides.
"""
import copy

import numpy as np
import pytest

from optional_torch import nn, requires_torch, torch  # noqa: E402

pytestmark = requires_torch  # every test here runs the torch re-statement

from scipy.ndimage import gaussian_filter  # noqa: E402

from conftest import method_dir  # noqa: E402
from torch_reference import TorchVGG16, randomise_batchnorm, torch_tapped_features  # noqa: E402

method_dir("KDAD-paddle")
import paddle  # noqa: E402

from common.networks.backbones import load_state_dict_strict, torch_to_paddle_state_dict  # noqa: E402
from kdad.detector import KDADDetector  # noqa: E402
from kdad.loss import MseDirectionLoss, detection_scores  # noqa: E402
from kdad.model import (  # noqa: E402
    CLONER_ALL_TAPS,
    CLONER_B_PARAMETERS,
    EXPERT_ALL_TAPS,
    Cloner,
    Expert,
    KDADNetwork,
    count_parameters,
    trainable_parameters,
)

SIZE = 128
BATCH = 2
LAMDA = 0.5
SMALL = 32  # image size of the float64 saliency checks
TAP_RTOL = 1e-4
MAP_ATOL = 1e-4
MAP_FLOAT32_ATOL = 1e-2  # float32 saliency maps at 128 px (values in [0, 1]): see the test

# ----------------------------------------------------------------------------------------------------------------
# PyTorch statement of the official code
# ----------------------------------------------------------------------------------------------------------------
OFFICIAL_CFG_B = [16, 16, "M", 16, 128, "M", 16, 16, 256, "M", 16, 16, 512, "M", 16, 16, 512, "M"]
OFFICIAL_CLONER_TAPS = (2, 5, 8, 11, 14, 17, 20, 23, 26, 29, 32, 35, 38)
OFFICIAL_EXPERT_TAPS = (1, 4, 6, 9, 11, 13, 16, 18, 20, 23, 25, 27, 30)


def official_make_layers(cfg, use_bias=False, batch_norm=True):
    """``make_layers``: conv (xavier_uniform_) -> BN -> ReLU, or conv -> ReLU right before a max-pool."""
    layers, in_channels = [], 3
    for i in range(len(cfg)):
        if cfg[i] == "M":
            layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
        else:
            conv2d = nn.Conv2d(in_channels, cfg[i], kernel_size=3, padding=1, bias=use_bias)
            torch.nn.init.xavier_uniform_(conv2d.weight)
            if batch_norm and cfg[i + 1] != "M":
                layers += [conv2d, nn.BatchNorm2d(cfg[i]), nn.ReLU(inplace=True)]
            else:
                layers += [conv2d, nn.ReLU(inplace=True)]
            in_channels = cfg[i]
    return nn.Sequential(*layers)


class OfficialCloner(nn.Module):
    """``VGG(make_layers(cfg['B'], ...))`` without the Grad-CAM hook (which changes no number)."""

    def __init__(self):
        super().__init__()
        self.features = official_make_layers(OFFICIAL_CFG_B)

    def forward(self, x):
        result = []
        for i in range(len(self.features)):
            x = self.features[i](x)
            if i in OFFICIAL_CLONER_TAPS:
                result.append(x)
        return result


def official_expert(vgg_features, x):
    """``Vgg16.forward``: the 13 taps of torchvision's ``vgg16().features``."""
    return torch_tapped_features(vgg_features, x, OFFICIAL_EXPERT_TAPS)


def official_mse_direction_loss(output_pred, output_real, lamda):
    """``MseDirectionLoss.forward`` (taps 3, 6, 9, 12)."""
    criterion, similarity = nn.MSELoss(), nn.CosineSimilarity()
    total_direction, total_value = 0, 0
    for i in (3, 6, 9, 12):
        y_pred, y = output_pred[i], output_real[i]
        total_value = total_value + criterion(y_pred, y)
        total_direction = total_direction + torch.mean(
            1 - similarity(y_pred.view(y_pred.shape[0], -1), y.view(y.shape[0], -1)))
    return total_direction + lamda * total_value


def official_detection_scores(output_pred, output_real, lamda):
    """``detection_test``'s ``total_loss`` (taps 6, 9, 12, per image)."""
    similarity = nn.CosineSimilarity()
    total = 0
    for i in (6, 9, 12):
        y_pred, y = output_pred[i], output_real[i]
        value = torch.mean((y_pred - y) ** 2, dim=(1, 2, 3))
        direction = 1 - similarity(y_pred.view(y_pred.shape[0], -1), y.view(y.shape[0], -1))
        total = total + direction + lamda * value
    return total


def official_saliency_loss(output_pred, output_real, lamda):
    """``grad_calc`` / ``VanillaSaliency`` loss of one image: MSELoss + batch-mean cosine over taps 6, 9, 12."""
    criterion, similarity = nn.MSELoss(), nn.CosineSimilarity()
    total = 0
    for i in (6, 9, 12):
        y_pred, y = output_pred[i], output_real[i]
        total = total + torch.mean(1 - similarity(y_pred.view(y_pred.shape[0], -1), y.view(y.shape[0], -1)))
        total = total + lamda * criterion(y_pred, y)
    return total


def official_grad_calc(inputs, cloner, vgg, lamda):
    """``grad_calc``: one image at a time, gradient of its loss w.r.t. the (shared) input batch."""
    inputs = inputs.clone().requires_grad_(True)
    temp = torch.zeros(inputs.shape, dtype=inputs.dtype)  # official: default dtype (float32 there)
    for i in range(inputs.shape[0]):
        loss = official_saliency_loss(cloner(inputs[i].unsqueeze(0)), official_expert(vgg, inputs[i].unsqueeze(0)),
                                      lamda)
        cloner.zero_grad()
        loss.backward()
        temp[i] = inputs.grad[i]
    return temp


def official_convert_to_grayscale(im_as_arr):
    grayscale_im = np.sum(np.abs(im_as_arr), axis=0)
    im_max = np.percentile(grayscale_im, 99)
    im_min = np.min(grayscale_im)
    grayscale_im = np.clip((grayscale_im - im_min) / (im_max - im_min), 0, 1)
    return np.expand_dims(grayscale_im, axis=0)


def official_gradients_localization(x, cloner, vgg, lamda):
    grad = official_grad_calc(x, cloner, vgg, lamda)
    temp = np.zeros((grad.shape[0], grad.shape[2], grad.shape[3]))
    for i in range(grad.shape[0]):
        temp[i] = gaussian_filter(official_convert_to_grayscale(grad[i].numpy()).squeeze(0), sigma=4)
    return grad.numpy(), temp


def official_vanilla_saliency(data, cloner, vgg, lamda):
    """``VanillaSaliency.generate_saliency(data, make_single_channel=True)`` for one image (1, 3, H, W)."""
    data = data.clone().requires_grad_(True)
    loss = official_saliency_loss(cloner(data), official_expert(vgg, data), lamda)
    cloner.zero_grad()
    loss.backward()
    return official_convert_to_grayscale(np.asarray(data.grad.detach().squeeze(0)))


def official_smooth_grad_maps(x, cloner, vgg, lamda, unit_noise, corrected=False):
    """``smooth_grad_localization`` with ``generate_smooth_grad(data, n, 0.05, vbp)``; the noise of copy k of image
    i is ``std * unit_noise[k, i]`` (``normal_(0, sigma ** 2)`` draws ``sigma ** 2 * N(0, 1)``)."""
    size = x.shape[-1]
    maps = np.zeros((x.shape[0], 1, size, size), dtype=np.float32)
    for i in range(x.shape[0]):
        data = x[i].view(1, 3, size, size)
        value_range = (torch.max(data) - torch.min(data)).item()
        std = 0.05 * value_range if corrected else (0.05 / value_range) ** 2
        smooth = None
        for k in range(unit_noise.shape[0]):
            noisy = data + std * unit_noise[k, i:i + 1]
            grads = official_vanilla_saliency(noisy, cloner, vgg, lamda)
            smooth = grads if smooth is None else smooth + grads
        smooth = abs(smooth / unit_noise.shape[0])
        smooth = (smooth - min(smooth.flatten())) / (max(smooth.flatten()) - min(smooth.flatten()))
        maps[i] = gaussian_filter(smooth, sigma=4)
    return maps.reshape(-1, size, size)


def official_gbp_maps(x, cloner, vgg, lamda):
    """``gbp_localization``: ReLU hooks on the cloner (``GuidedBackprop.update_relus``), one image at a time."""
    size = x.shape[-1]
    maps = np.zeros((x.shape[0], 1, size, size), dtype=np.float32)
    for i in range(x.shape[0]):
        forward_relu_outputs, hooks = [], []

        def relu_backward_hook_function(module, grad_in, grad_out):
            corresponding_forward_output = forward_relu_outputs[-1]
            corresponding_forward_output[corresponding_forward_output > 0] = 1
            modified_grad_out = corresponding_forward_output * torch.clamp(grad_in[0], min=0.0)
            del forward_relu_outputs[-1]
            return (modified_grad_out,)

        def relu_forward_hook_function(module, ten_in, ten_out):
            forward_relu_outputs.append(ten_out)

        for module in cloner.modules():
            if isinstance(module, nn.ReLU):
                hooks.append(module.register_backward_hook(relu_backward_hook_function))
                hooks.append(module.register_forward_hook(relu_forward_hook_function))
        saliency = official_vanilla_saliency(x[i].view(1, 3, size, size), cloner, vgg, lamda)
        for hook in hooks:
            hook.remove()
        saliency = abs(saliency)
        saliency = (saliency - min(saliency.flatten())) / (max(saliency.flatten()) - min(saliency.flatten()))
        maps[i] = gaussian_filter(saliency, sigma=4)
    return maps.reshape(-1, size, size)


# ----------------------------------------------------------------------------------------------------------------
# Fixtures: random torch weights, converted to Paddle
# ----------------------------------------------------------------------------------------------------------------
def relative_error(actual, expected):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-30))


def paddle_state(module):
    return torch_to_paddle_state_dict({k: v.detach().numpy() for k, v in module.state_dict().items()})


def to_numpy(tensors):
    return [t.detach().numpy() for t in tensors]


@pytest.fixture(scope="module", autouse=True)
def torch_single_thread():
    """torch with 2 threads next to Paddle in one process runs small convolutions ~100x slower here (thread
    contention; 0.6 s instead of 6 ms for the cloner at 32 px), so this module runs torch on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models():
    """Random torch VGG16 features and official cloner (random BN statistics), converted into a KDADNetwork."""
    torch.manual_seed(0)
    vgg = TorchVGG16().features.eval()
    cloner = randomise_batchnorm(OfficialCloner(), seed=1)
    network = KDADNetwork(expert_weights=None)
    load_state_dict_strict(network.expert, paddle_state(_features_owner(vgg)))
    load_state_dict_strict(network.cloner, paddle_state(cloner))
    network.eval()
    x = np.random.default_rng(0).random((BATCH, 3, SIZE, SIZE), dtype=np.float32)
    with torch.no_grad():
        torch_expert = official_expert(vgg, torch.tensor(x))  # 13 taps, eval; shared by several tests
    return vgg, cloner, network, x, torch_expert


def _features_owner(features):
    """A module holding ``features``, so that its state dict has torchvision's ``features.N`` names."""
    owner = nn.Module()
    owner.features = features
    return owner


@pytest.fixture(scope="module")
def models64(models):
    """The same networks in float64 on both sides, and 32 px images, for the saliency checks.

    Gradients of max-pools and ReLUs are discontinuous: where two pooled values (or a pre-activation and 0) are
    closer than float32 rounding, the two frameworks can route the gradient differently, and the difference then
    spreads over the receptive field of that unit. In float32 at 128 px this happens a few times per batch and
    changes a large part of the input gradient by more than 1e-4 of its maximum. In float64 it does not happen,
    so float64 checks every step of the saliency pipeline tightly (float64 torch convolutions are slow, hence
    32 px).
    """
    vgg, cloner, network, _, _ = models
    network64 = KDADNetwork(expert_weights=None)
    network64.set_state_dict(network.state_dict())
    network64.to(dtype="float64")
    network64.eval()
    x = np.random.default_rng(1).random((BATCH, 3, SMALL, SMALL))
    return copy.deepcopy(vgg).double(), copy.deepcopy(cloner).double(), network64, x


# ----------------------------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------------------------
def test_parameter_count_and_tap_shapes(models):
    _, cloner, network, x, _ = models
    assert count_parameters(network) == CLONER_B_PARAMETERS == 343984
    assert count_parameters(network.cloner) == sum(p.numel() for p in cloner.parameters())
    assert count_parameters(network.expert, trainable_only=False) == 14714688
    assert len(network.cloner.features) == len(cloner.features) == 39
    expert_taps, cloner_taps = network(paddle.to_tensor(x))
    expected = [(BATCH, 128, 32, 32), (BATCH, 256, 16, 16), (BATCH, 512, 8, 8), (BATCH, 512, 4, 4)]
    assert [tuple(t.shape) for t in expert_taps] == [tuple(t.shape) for t in cloner_taps] == expected


def test_expert_taps_match_official(models):
    _, _, network, x, torch_expert = models
    expert = Expert(weights=None, taps=EXPERT_ALL_TAPS)
    expert.set_state_dict(network.expert.state_dict())
    ours = to_numpy(expert(paddle.to_tensor(x)))
    assert len(ours) == 13 and [a.shape for a in ours] == [b.shape for b in torch_expert]
    errors = [relative_error(mine, theirs) for mine, theirs in zip(ours, to_numpy(torch_expert))]
    print(f"expert taps: max relative error {max(errors):.1e}")
    assert max(errors) < TAP_RTOL


@pytest.mark.filterwarnings("ignore:When training")
@pytest.mark.parametrize("train_mode", [False, True])
def test_cloner_taps_match_official(models, train_mode):
    _, cloner, network, x, _ = models
    full_cloner = Cloner(taps=CLONER_ALL_TAPS)
    full_cloner.set_state_dict(network.cloner.state_dict())
    full_cloner.train() if train_mode else full_cloner.eval()
    cloner = copy.deepcopy(cloner).train(train_mode)  # train mode updates the running statistics
    with torch.no_grad():
        theirs = to_numpy(cloner(torch.tensor(x)))
    ours = to_numpy(full_cloner(paddle.to_tensor(x)))
    assert len(ours) == 13 and [a.shape for a in ours] == [b.shape for b in theirs]
    errors = [relative_error(mine, reference) for mine, reference in zip(ours, theirs)]
    print(f"cloner taps ({'train' if train_mode else 'eval'}): max relative error {max(errors):.1e}")
    assert max(errors) < TAP_RTOL
    if train_mode:  # running statistics after one batch (Paddle momentum 0.9 == torch 0.1)
        for key, value in cloner.state_dict().items():
            if key.endswith("running_mean"):
                mine = full_cloner.state_dict()[key.replace("running_mean", "_mean")].numpy()
                assert relative_error(mine, value.numpy()) < 1e-5
            if key.endswith("running_var"):  # torch moves it with the unbiased batch variance (BatchNorm2D)
                mine = full_cloner.state_dict()[key.replace("running_var", "_variance")].numpy()
                assert relative_error(mine, value.numpy()) < 1e-5


# ----------------------------------------------------------------------------------------------------------------
# Loss and detection score
# ----------------------------------------------------------------------------------------------------------------
def float64_reference(expert_taps, cloner_taps, taps):
    """Per-image ``(direction, value)`` sums in float64 NumPy (the accuracy target)."""
    direction, value = 0.0, 0.0
    for i in taps:
        e = expert_taps[i].reshape(len(expert_taps[i]), -1).astype(np.float64)
        c = cloner_taps[i].reshape(len(cloner_taps[i]), -1).astype(np.float64)
        cos = (e * c).sum(1) / np.sqrt((e * e).sum(1) * (c * c).sum(1))
        direction = direction + (1 - cos)
        value = value + ((c - e) ** 2).mean(1)
    return direction, value


def critical(taps13):
    return [taps13[i] for i in (3, 6, 9, 12)]


def pad13(taps4):
    """4 critical taps (NumPy) placed at the official positions 3, 6, 9, 12 of a 13-tap list of torch tensors."""
    full = [None] * 13
    for position, tap in zip((3, 6, 9, 12), taps4):
        full[position] = torch.tensor(tap)
    return full


def test_loss_and_scores_match_official(models):
    _, cloner, network, x, torch_expert = models
    with torch.no_grad():
        output_pred = cloner(torch.tensor(x))
        torch_loss = float(official_mse_direction_loss(output_pred, torch_expert, LAMDA))
        torch_scores = official_detection_scores(output_pred, torch_expert, LAMDA).numpy()
    expert_taps, cloner_taps = network(paddle.to_tensor(x))
    loss = float(MseDirectionLoss(LAMDA)(expert_taps, cloner_taps))
    scores = detection_scores(expert_taps, cloner_taps, LAMDA).numpy()
    print(f"loss relative error {abs(loss / torch_loss - 1):.1e}, scores {relative_error(scores, torch_scores):.1e}")
    assert abs(loss / torch_loss - 1) < 1e-5
    assert relative_error(scores, torch_scores) < 1e-5
    # against float64 sums of the same float32 taps; the paper form moves lamda to the direction term
    e4, c4 = to_numpy(expert_taps), to_numpy(cloner_taps)
    direction, value = float64_reference(e4, c4, (0, 1, 2, 3))
    assert abs(loss / np.mean(direction + LAMDA * value) - 1) < 1e-6
    paper = float(MseDirectionLoss(LAMDA, form="paper")(expert_taps, cloner_taps))
    assert abs(paper / np.mean(value + LAMDA * direction) - 1) < 1e-6
    direction3, value3 = float64_reference(e4, c4, (1, 2, 3))
    assert relative_error(scores, direction3 + LAMDA * value3) < 1e-6


def test_loss_is_accurate_when_cloner_nearly_equals_expert(models):
    """1 - cos of nearly parallel maps: float64 reductions keep 1e-5 relative accuracy (float32 ones need not)."""
    _, _, _, _, torch_expert = models
    e4 = [t.numpy() for t in critical(torch_expert)]
    rng = np.random.default_rng(3)
    c4 = [e * (1 + 1e-3 * rng.standard_normal(e.shape)).astype(np.float32) for e in e4]
    loss = float(MseDirectionLoss(LAMDA)([paddle.to_tensor(e) for e in e4], [paddle.to_tensor(c) for c in c4]))
    direction, value = float64_reference(e4, c4, (0, 1, 2, 3))
    target = np.mean(direction + LAMDA * value)
    float32_loss = float(official_mse_direction_loss(pad13(c4), pad13(e4), LAMDA))
    print(f"near-equal maps: relative error of torch float32 {abs(float32_loss / target - 1):.1e}, "
          f"ours {abs(loss / target - 1):.1e}")
    assert abs(loss / target - 1) < 1e-5
    # the case does defeat float32 reductions (measured 0.38 for the official float32 loss), so it tests the above
    assert abs(float32_loss / target - 1) > 1e-2


# ----------------------------------------------------------------------------------------------------------------
# Saliency maps (float64, see models64)
# ----------------------------------------------------------------------------------------------------------------
def test_vanilla_gradients_and_maps_match_official(models64):
    vgg, cloner, network, x = models64
    torch_grad, torch_maps = official_gradients_localization(torch.tensor(x), cloner, vgg, LAMDA)
    detector = KDADDetector(network, LAMDA, method="vanilla", image_size=SMALL)
    grads, scores = detector.input_gradients(paddle.to_tensor(x))
    assert relative_error(grads.numpy(), torch_grad) < 1e-9
    single, _ = detector.input_gradients(paddle.to_tensor(x[1:]))  # a batch gives each image its own gradient
    assert relative_error(grads.numpy()[1:], single.numpy()) < 1e-12
    maps, _ = detector(paddle.to_tensor(x))
    assert maps.shape == [BATCH, 1, SMALL, SMALL] and maps.dtype == paddle.float32
    print(f"vanilla: gradient relative error {relative_error(grads.numpy(), torch_grad):.1e}, "
          f"map max abs error {np.abs(maps.numpy()[:, 0] - torch_maps).max():.1e}")
    assert np.abs(maps.numpy()[:, 0] - torch_maps).max() < 1e-5


def test_vanilla_maps_at_the_evaluation_precision_and_size(models):
    """The maps evaluation computes (float32, 128 px, the default vanilla saliency) against the official code.

    Tolerance: the official code's own float32 run is compared with its float64 run on the same weights; KDAD's
    float32 maps must be within ``FACTOR`` times that spread of the float64 maps (max abs error on maps in [0, 1];
    max-pool/ReLU near-ties route a few gradients differently in float32, see ``models64``), and within
    ``MAP_FLOAT32_ATOL`` in absolute terms. The scores returned with the maps equal the official detection scores.
    """
    factor = 4
    vgg, cloner, network, x, _ = models
    _, maps32 = official_gradients_localization(torch.tensor(x), cloner.eval(), vgg, LAMDA)
    _, maps64 = official_gradients_localization(torch.tensor(x).double(), copy.deepcopy(cloner).double().eval(),
                                                copy.deepcopy(vgg).double(), LAMDA)
    detector = KDADDetector(network, LAMDA, method="vanilla", image_size=SIZE)
    maps, scores = detector(paddle.to_tensor(x))
    assert maps.shape == [BATCH, 1, SIZE, SIZE] and maps.dtype == paddle.float32
    spread = np.abs(maps32 - maps64).max()
    error = np.abs(maps.numpy()[:, 0] - maps64).max()
    print(f"vanilla maps at {SIZE} px float32: max abs error against float64 of the official float32 run "
          f"{spread:.1e}, KDAD {error:.1e}")
    assert error <= factor * max(spread, 1e-6)
    assert error <= MAP_FLOAT32_ATOL
    with torch.no_grad():
        expected = official_detection_scores(cloner(torch.tensor(x)), official_expert(vgg, torch.tensor(x)), LAMDA)
    assert relative_error(scores.numpy(), expected.numpy()) < 1e-5


@pytest.mark.filterwarnings("ignore::FutureWarning")  # the official non-full ReLU backward hooks
def test_gbp_maps_match_official(models64):
    vgg, cloner, network, x = models64
    torch_maps = official_gbp_maps(torch.tensor(x), cloner, vgg, LAMDA)
    maps, _ = KDADDetector(network, LAMDA, method="gbp", image_size=SMALL)(paddle.to_tensor(x))
    vanilla, _ = KDADDetector(network, LAMDA, method="vanilla", image_size=SMALL)(paddle.to_tensor(x))
    print(f"gbp: map max abs error {np.abs(maps.numpy()[:, 0] - torch_maps).max():.1e}")
    assert np.abs(maps.numpy()[:, 0] - torch_maps).max() < 1e-5
    assert np.abs(maps.numpy() - vanilla.numpy()).max() > 1e-2  # guided backprop does change the map


def test_smoothgrad_maps_match_official(models64):
    vgg, cloner, network, x = models64
    unit = np.random.default_rng(5).standard_normal((2, BATCH, 3, SMALL, SMALL))
    for noise in ("official", "corrected"):
        torch_maps = official_smooth_grad_maps(torch.tensor(x), cloner, vgg, LAMDA, torch.tensor(unit),
                                               corrected=noise == "corrected")
        detector = KDADDetector(network, LAMDA, method="smoothgrad", image_size=SMALL, smoothgrad_noise=noise)
        maps, _ = detector(paddle.to_tensor(x), paddle.to_tensor(unit))
        print(f"smoothgrad ({noise} noise): map max abs error {np.abs(maps.numpy()[:, 0] - torch_maps).max():.1e}")
        assert np.abs(maps.numpy()[:, 0] - torch_maps).max() < 1e-5, noise


# ----------------------------------------------------------------------------------------------------------------
# Training: 5 Adam steps
# ----------------------------------------------------------------------------------------------------------------
def torch_adam_run(cloner, expert_taps, x, dtype, steps=5):
    """Official training loop on one fixed batch; returns (losses, state after the steps, step-1 gradients)."""
    model = cloner.to(dtype).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    real = [None if t is None else t.to(dtype) for t in expert_taps]
    losses, first_gradients = [], None
    for _ in range(steps):
        loss = official_mse_direction_loss(model(torch.tensor(x).to(dtype)), real, LAMDA)
        optimizer.zero_grad()
        loss.backward()
        if first_gradients is None:
            first_gradients = {k: p.grad.double().numpy().copy() for k, p in model.named_parameters()}
        optimizer.step()
        losses.append(loss.item())
    state = {k: v.detach().double().numpy() for k, v in model.state_dict().items()}
    return np.array(losses), state, first_gradients


def paddle_state_to_torch_names(model):
    out = {}
    for key, value in model.state_dict().items():
        key = key.replace("._mean", ".running_mean").replace("._variance", ".running_var")
        out[key] = value.numpy().astype(np.float64)
    return out


def paddle_adam_run(state, expert_taps, x, dtype, steps=5):
    """The same loop with KDAD-paddle's Cloner, MseDirectionLoss and paddle.optimizer.Adam."""
    model = Cloner()
    model.set_state_dict(state)
    model.to(dtype=dtype)
    model.train()
    optimizer = paddle.optimizer.Adam(learning_rate=1e-3, parameters=trainable_parameters(model))
    taps = [paddle.to_tensor(t.numpy()).astype(dtype) for t in critical(expert_taps)]
    criterion, losses, first_gradients = MseDirectionLoss(LAMDA), [], None
    for _ in range(steps):
        loss = criterion(taps, model(paddle.to_tensor(x).astype(dtype)))
        optimizer.clear_grad()
        loss.backward()
        if first_gradients is None:
            first_gradients = {name: p.grad.numpy().astype(np.float64) for name, p in model.named_parameters()
                               if not p.stop_gradient}  # Paddle lists BN running statistics as parameters
        optimizer.step()
        losses.append(float(loss))
    return np.array(losses), paddle_state_to_torch_names(model), first_gradients


@pytest.mark.filterwarnings("ignore:When training")
def test_five_adam_steps_match_official(models):
    """5 Adam steps (lr 1e-3, train mode, one fixed batch; the frozen expert's taps are inputs, computed once).

    float64 on both sides: step-1 gradients, losses, weights and BN running statistics agree tightly.
    float32: gradients of max-pools/ReLUs flip at near-ties (see ``models64``) and Adam's first steps move every
    weight by about lr whatever the size of its gradient, so float32 rounding alone separates torch float32 from
    torch float64 visibly; Paddle float32 must stay within a small multiple of that spread.
    """
    _, cloner, network, x, torch_expert = models
    torch_runs = {dtype: torch_adam_run(copy.deepcopy(cloner), torch_expert, x, dtype)
                  for dtype in (torch.float32, torch.float64)}
    (loss32, state32, _), (loss64, state64, grads64) = torch_runs[torch.float32], torch_runs[torch.float64]
    state = network.cloner.state_dict()
    ours64, weights64, ours_grads64 = paddle_adam_run(state, torch_expert, x, "float64")
    assert max(relative_error(ours_grads64[k], grads64[k]) for k in grads64) < 1e-9
    assert np.abs(ours64 / loss64 - 1).max() < 1e-9
    # Adam moves a weight whose gradient is at rounding level by up to lr * |g| / eps ~ 1e-8 per step
    for key in state64:
        if not key.endswith("num_batches_tracked"):
            assert np.abs(weights64[key] - state64[key]).max() < 2e-7, key
    ours32, weights32, _ = paddle_adam_run(state, torch_expert, x, "float32")
    keys = [k for k in state64 if k.endswith("weight")]
    loss_spread, loss_error = np.abs(loss32 / loss64 - 1).max(), np.abs(ours32 / loss64 - 1).max()
    weight_spread = max(np.abs(state32[k] - state64[k]).max() for k in keys)
    weight_error = max(np.abs(weights32[k] - state64[k]).max() for k in keys)
    print(f"Adam x5 float32: loss rel. spread torch {loss_spread:.1e}, paddle {loss_error:.1e}; "
          f"weight abs. spread torch {weight_spread:.1e}, paddle {weight_error:.1e}")
    assert abs(ours32[0] / loss64[0] - 1) < 1e-5
    assert loss_error <= 4 * max(loss_spread, 1e-7)
    assert weight_error <= 4 * max(weight_spread, 1e-7)
    assert loss64[-1] < loss64[0]
