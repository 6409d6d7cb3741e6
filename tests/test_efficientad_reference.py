"""EfficientAD-paddle against an independent PyTorch statement of nelson1425/EfficientAD (skipped without torch).

The reference below restates, in torch, ``common.py`` (``get_pdn_small``, ``get_pdn_medium``, ``get_autoencoder``
with ``nn.Upsample``), ``efficientad.py`` (``teacher_normalization``, ``map_normalization``, ``predict``, the
post-processing of ``test`` and one iteration of the training loop) and ``pretraining.py``
(``FeatureExtractor.embed`` after the backbone: unfold, upsample, ``adaptive_avg_pool1d`` twice). It does not
import the Paddle code. Torch weights are converted (same keys) and loaded into the Paddle networks.

Networks run at their real widths for the forward checks (PDN-M at 128 px to keep the test fast; the PDN is
size-agnostic) and with fewer hidden channels (``hidden_channels``) for the statistics, loss, map and Adam checks.
"""
import copy
import itertools

import numpy as np
import pytest

from optional_torch import F, nn, requires_torch, torch  # noqa: E402

pytestmark = requires_torch  # every test here runs the torch re-statement

from conftest import method_dir  # noqa: E402

method_dir("EfficientAD-paddle")

import paddle  # noqa: E402
from test_efficientad import FixedBackbone  # noqa: E402 - a stand-in shared with the torch-free tests

from common.networks.backbones import load_state_dict_strict  # noqa: E402
from efficientad import detector as ed  # noqa: E402
from efficientad import loss as el  # noqa: E402
from efficientad import model as em  # noqa: E402

SMALL_HIDDEN = (16, 32)        # reduced PDN widths for the statistics / loss / map checks
AE_HIDDEN = (8, 16)            # reduced autoencoder widths for the statistics / loss / map / export checks
TINY_HIDDEN, TINY_AE_HIDDEN = (8, 16), (4, 8)   # the Adam check (three training runs of five steps)


# ----------------------------------------------------------------------------------------------------------------
# PyTorch reference (nelson1425 common.py / efficientad.py / pretraining.py, restated)
# ----------------------------------------------------------------------------------------------------------------
def torch_pdn_small(out_channels=384, padding=False, hidden=(128, 256)):
    a, b = hidden
    p = 1 if padding else 0
    return nn.Sequential(nn.Conv2d(3, a, 4, padding=3 * p), nn.ReLU(inplace=True), nn.AvgPool2d(2, 2, padding=p),
                         nn.Conv2d(a, b, 4, padding=3 * p), nn.ReLU(inplace=True), nn.AvgPool2d(2, 2, padding=p),
                         nn.Conv2d(b, b, 3, padding=p), nn.ReLU(inplace=True), nn.Conv2d(b, out_channels, 4))


def torch_pdn_medium(out_channels=384, padding=False, hidden=(256, 512)):
    a, b = hidden
    p = 1 if padding else 0
    return nn.Sequential(nn.Conv2d(3, a, 4, padding=3 * p), nn.ReLU(inplace=True), nn.AvgPool2d(2, 2, padding=p),
                         nn.Conv2d(a, b, 4, padding=3 * p), nn.ReLU(inplace=True), nn.AvgPool2d(2, 2, padding=p),
                         nn.Conv2d(b, b, 1), nn.ReLU(inplace=True), nn.Conv2d(b, b, 3, padding=p),
                         nn.ReLU(inplace=True), nn.Conv2d(b, out_channels, 4), nn.ReLU(inplace=True),
                         nn.Conv2d(out_channels, out_channels, 1))


def torch_autoencoder(out_channels=384, hidden=(32, 64), dropout=0.2):
    a, b = hidden
    layers = []
    for cin, cout in ((3, a), (a, a), (a, b), (b, b), (b, b)):
        layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.ReLU(inplace=True)]
    layers.append(nn.Conv2d(b, b, 8))
    for size in (3, 8, 15, 32, 63, 127):
        layers += [nn.Upsample(size=size, mode="bilinear"), nn.Conv2d(b, b, 4, stride=1, padding=2),
                   nn.ReLU(inplace=True), nn.Dropout(dropout)]
    layers += [nn.Upsample(size=56, mode="bilinear"), nn.Conv2d(b, b, 3, stride=1, padding=1),
               nn.ReLU(inplace=True), nn.Conv2d(b, out_channels, 3, stride=1, padding=1)]
    return nn.Sequential(*layers)


def torch_teacher_normalization(teacher, loader):
    with torch.no_grad():
        means = torch.stack([torch.mean(teacher(x), dim=[0, 2, 3]) for x in loader])
        channel_mean = torch.mean(means, dim=0)[None, :, None, None]
        distances = torch.stack([torch.mean((teacher(x) - channel_mean) ** 2, dim=[0, 2, 3]) for x in loader])
        return channel_mean, torch.sqrt(torch.mean(distances, dim=0))[None, :, None, None]


def torch_predict(image, teacher, student, autoencoder, mean, std, q=None, channels=384):
    with torch.no_grad():
        t = (teacher(image) - mean) / std
        s = student(image)
        a = autoencoder(image)
    map_st = torch.mean((t - s[:, :channels]) ** 2, dim=1, keepdim=True)
    map_ae = torch.mean((a - s[:, channels:]) ** 2, dim=1, keepdim=True)
    if q is not None:
        map_st = 0.1 * (map_st - q[0]) / (q[1] - q[0])
        map_ae = 0.1 * (map_ae - q[2]) / (q[3] - q[2])
    return 0.5 * map_st + 0.5 * map_ae, map_st, map_ae


def torch_map_normalization(loader, teacher, student, autoencoder, mean, std, channels):
    maps = [torch_predict(x, teacher, student, autoencoder, mean, std, channels=channels) for x in loader]
    maps_st = torch.cat([m[1] for m in maps])
    maps_ae = torch.cat([m[2] for m in maps])
    return (torch.quantile(maps_st, q=0.9), torch.quantile(maps_st, q=0.995),
            torch.quantile(maps_ae, q=0.9), torch.quantile(maps_ae, q=0.995))


def torch_train_terms(teacher, student, autoencoder, mean, std, image_st, image_ae, image_penalty, channels):
    """One iteration of the reference training loop, returning every term (``penalty`` None without a penalty
    image: the reference then skips that student pass)."""
    with torch.no_grad():
        teacher_st = (teacher(image_st) - mean) / std
    student_st = student(image_st)[:, :channels]
    distance_st = (teacher_st - student_st) ** 2
    d_hard = torch.quantile(distance_st, q=0.999)
    loss_hard = torch.mean(distance_st[distance_st >= d_hard])
    if image_penalty is not None:
        loss_penalty = torch.mean(student(image_penalty)[:, :channels] ** 2)
        loss_st = loss_hard + loss_penalty
    else:
        loss_penalty = None
        loss_st = loss_hard
    ae_output = autoencoder(image_ae)
    with torch.no_grad():
        teacher_ae = (teacher(image_ae) - mean) / std
    student_ae = student(image_ae)[:, channels:]
    loss_ae = torch.mean((teacher_ae - ae_output) ** 2)
    loss_stae = torch.mean((ae_output - student_ae) ** 2)
    return {"total": loss_st + loss_ae + loss_stae, "student": loss_st, "hard": loss_hard, "penalty": loss_penalty,
            "autoencoder": loss_ae, "student_autoencoder": loss_stae, "d_hard": d_hard,
            "hard_count": (distance_st >= d_hard).sum()}


def torch_embed_projection(layer2, layer3, layer_dim=1024, out_channels=384):
    """``pretraining.py::FeatureExtractor.embed`` after the backbone, for any layer2 grid (64x64 at 512 px)."""
    features = []
    shapes = []
    for x in (layer2, layer3):
        unfolded = nn.Unfold(kernel_size=3, stride=1, padding=1, dilation=1)(x)
        unfolded = unfolded.reshape(*x.shape[:2], 3, 3, -1).permute(0, 4, 1, 2, 3)
        features.append(unfolded)
        shapes.append(x.shape[-2:])
    ref = shapes[0]
    f = features[1].reshape(features[1].shape[0], shapes[1][0], shapes[1][1], *features[1].shape[2:])
    f = f.permute(0, -3, -2, -1, 1, 2)
    base = f.shape
    f = f.reshape(-1, *f.shape[-2:])
    f = F.interpolate(f.unsqueeze(1), size=(ref[0], ref[1]), mode="bilinear", align_corners=False).squeeze(1)
    f = f.reshape(*base[:-2], ref[0], ref[1]).permute(0, -2, -1, 1, 2, 3)
    features[1] = f.reshape(len(f), -1, *f.shape[-3:])
    features = [x.reshape(-1, *x.shape[-3:]) for x in features]
    pooled = torch.stack([F.adaptive_avg_pool1d(x.reshape(len(x), 1, -1), layer_dim).squeeze(1)
                          for x in features], dim=1)
    pooled = F.adaptive_avg_pool1d(pooled.reshape(len(pooled), 1, -1), out_channels).reshape(len(pooled), -1)
    return pooled.reshape(-1, ref[0], ref[1], out_channels).permute(0, 3, 1, 2)


# ----------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------
def to_paddle(torch_module, paddle_layer):
    """Load the torch module's weights (same keys) into the Paddle layer; every key and shape must match."""
    load_state_dict_strict(paddle_layer, {k: v.detach().cpu().numpy() for k, v in torch_module.state_dict().items()})
    return paddle_layer


def relative_error(ours, reference):
    """max |ours - reference| / max |reference|."""
    ours, reference = np.asarray(ours, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def norm_error(ours, reference):
    ours, reference = np.asarray(ours, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    return float(np.linalg.norm(ours - reference) / np.linalg.norm(reference))


def images(seed, count, batch=1, size=256):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((batch, 3, size, size)).astype(np.float32) for _ in range(count)]


def run_paddle(layer, x):
    with paddle.no_grad():
        return layer(paddle.to_tensor(x)).numpy()


def run_torch(module, x):
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="module", autouse=True)
def torch_single_thread():
    """One torch thread while this module runs (restored after): this 2-core machine is often shared, and torch's
    spinning OpenMP threads then slow the reference runs down several-fold; the results do not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reduced_pair():
    """Torch reference networks with reduced PDN widths (C = 384 outputs) and the converted Paddle detector."""
    torch.manual_seed(0)
    teacher = torch_pdn_small(384, hidden=SMALL_HIDDEN).eval()
    student = torch_pdn_small(768, hidden=SMALL_HIDDEN).eval()
    autoencoder = torch_autoencoder(384, hidden=AE_HIDDEN).eval()
    detector = ed.EfficientADDetector(to_paddle(teacher, em.PDNSmall(384, hidden_channels=SMALL_HIDDEN)),
                                      to_paddle(student, em.PDNSmall(768, hidden_channels=SMALL_HIDDEN)),
                                      to_paddle(autoencoder, em.Autoencoder(384, hidden_channels=AE_HIDDEN)))
    detector.eval()
    return teacher, student, autoencoder, detector


# ----------------------------------------------------------------------------------------------------------------
# Architecture
# ----------------------------------------------------------------------------------------------------------------
def test_parameter_counts_match_paper_and_reference():
    def torch_count(module):
        return sum(p.numel() for p in module.parameters())

    for size, torch_build in (("small", torch_pdn_small), ("medium", torch_pdn_medium)):
        for role, channels in (("teacher", 384), ("student", 768)):
            expected = em.PARAMETER_COUNTS[(size, role)]
            assert em.count_parameters(em.build_pdn(size, channels)) == expected
            assert em.count_parameters(em.build_pdn(size, channels, padding=True)) == expected
            assert torch_count(torch_build(channels)) == expected
    assert em.count_parameters(em.Autoencoder()) == em.PARAMETER_COUNTS["autoencoder"]
    assert torch_count(torch_autoencoder()) == em.PARAMETER_COUNTS["autoencoder"]
    detector = ed.build_detector("small")
    trainable = sum(int(np.prod(p.shape)) for p in detector.trainable_parameters())
    assert trainable == em.PARAMETER_COUNTS[("small", "student")] + em.PARAMETER_COUNTS["autoencoder"]
    assert all(p.stop_gradient for p in detector.teacher.parameters())
    assert em.pdn_output_size(256) == 56 and em.pdn_output_size(256, padding=True) == 64
    encoder = em.Autoencoder()[:11]     # slices are plain Sequentials: the encoder down to the 64x1x1 code
    assert encoder(paddle.zeros([1, 3, 256, 256])).shape == [1, 64, 1, 1]


def test_pytorch_default_initialisation():
    """Every conv weight and bias is U(+-1/sqrt(fan_in)): bounded, and with the uniform's std (b / sqrt(3))."""
    pdn = em.PDNSmall(768)
    for layer in (pdn[0], pdn[3], pdn[8]):
        weight, bias = layer.weight.numpy(), layer.bias.numpy()
        bound = 1.0 / np.sqrt(np.prod(weight.shape[1:]))
        assert np.abs(weight).max() <= bound and np.abs(bias).max() <= bound
        assert abs(weight.std() / (bound / np.sqrt(3)) - 1) < 0.02
        assert abs(weight.mean()) < 0.02 * bound


def test_small_networks_match_torch():
    """PDN-S teacher (384, at 256 px) and student (768, at 160 px), the autoencoder, and the padded pretraining PDN
    (AvgPool2D exclusive=False) at 128 px."""
    torch.manual_seed(1)
    x = images(1, 1)[0]
    cases = ((torch_pdn_small(384), em.PDNSmall(384), x, (1, 384, 56, 56)),
             (torch_pdn_small(768), em.PDNSmall(768), x[:, :, :160, :160], (1, 768, 32, 32)),
             (torch_autoencoder(384).eval(), em.Autoencoder(384), x, (1, 384, 56, 56)),
             (torch_pdn_small(384, padding=True), em.PDNSmall(384, padding=True), x[:, :, :128, :128],
              (1, 384, 32, 32)))
    for torch_net, paddle_net, inputs, shape in cases:
        to_paddle(torch_net, paddle_net).eval()
        ours, reference = run_paddle(paddle_net, inputs), run_torch(torch_net, inputs)
        assert ours.shape == shape
        assert relative_error(ours, reference) < 1e-5
    # Paddle's default AvgPool2D (exclusive=True) would not count the padding: the border would differ
    pool = paddle.nn.AvgPool2D(2, 2, padding=1)
    assert not np.allclose(pool(paddle.ones([1, 1, 4, 4])).numpy(), F.avg_pool2d(torch.ones(1, 1, 4, 4), 2, 2,
                                                                                  padding=1).numpy())


def test_medium_networks_match_torch():
    """PDN-M teacher, student and padded variant, one forward each at 96 px (size-agnostic architecture)."""
    torch.manual_seed(2)
    x = images(2, 1, size=96)[0]
    for torch_net, paddle_net, shape in ((torch_pdn_medium(384), em.PDNMedium(384), (1, 384, 16, 16)),
                                         (torch_pdn_medium(768), em.PDNMedium(768), (1, 768, 16, 16)),
                                         (torch_pdn_medium(384, padding=True), em.PDNMedium(384, padding=True),
                                          (1, 384, 24, 24))):
        to_paddle(torch_net, paddle_net).eval()
        ours, reference = run_paddle(paddle_net, x), run_torch(torch_net, x)
        assert ours.shape == shape and shape[2] == em.pdn_output_size(96, paddle_net.padding)
        assert relative_error(ours, reference) < 1e-5


# ----------------------------------------------------------------------------------------------------------------
# Quantile, statistics, maps
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_quantile_equals_torch(dtype):
    """Exact equality with torch.quantile, including a 384x56x56 tensor (float32 rank rounding) and ties."""
    rng = np.random.default_rng(3)
    cases = [rng.random((1, 384, 56, 56)), rng.random(1000), np.round(rng.random(5000) * 20), rng.random(1),
             rng.standard_normal((3, 1, 56, 56))]
    for values in cases:
        values = values.astype(dtype)
        for q in (0.0, 0.5, 0.9, 0.995, 0.999, 1.0):
            ours = float(el.quantile(paddle.to_tensor(values), q))
            reference = float(torch.quantile(torch.from_numpy(values), q))
            assert ours == reference, (values.shape, q)


def test_teacher_statistics_maps_and_score_match_torch(reduced_pair):
    """teacher_normalization (mixed batch sizes), map_normalization, normalised / padded / resized maps, score."""
    teacher, student, autoencoder, detector = reduced_pair
    train = images(4, 2) + images(5, 1, batch=2)
    t_mean, t_std = torch_teacher_normalization(teacher, [torch.from_numpy(b) for b in train])
    p_mean, p_std = ed.teacher_normalization(detector.teacher, train)
    assert tuple(p_mean.shape) == (1, 384, 1, 1)
    assert relative_error(p_mean.numpy(), t_mean.numpy()) < 1e-5
    assert relative_error(p_std.numpy(), t_std.numpy()) < 1e-5
    detector.set_teacher_statistics(p_mean, p_std)

    validation = images(6, 3)
    t_q = torch_map_normalization([torch.from_numpy(b) for b in validation], teacher, student, autoencoder,
                                  t_mean, t_std, 384)
    p_q = ed.map_normalization(detector, validation)
    for ours, reference in zip(p_q, t_q):
        assert abs(ours - float(reference)) <= 1e-5 * abs(float(reference))
    detector.set_map_quantiles(*p_q)

    test_batch = images(7, 1, batch=2)[0]
    t_combined, t_st, t_ae = torch_predict(torch.from_numpy(test_batch), teacher, student, autoencoder, t_mean,
                                           t_std, q=t_q, channels=384)
    t_padded = F.pad(t_combined, (4, 4, 4, 4))
    t_full = F.interpolate(t_padded, (256, 256), mode="bilinear")
    t_original = F.interpolate(t_padded, (300, 420), mode="bilinear")   # an original image resolution
    with paddle.no_grad():
        x = paddle.to_tensor(test_batch)
        p_combined, p_st, p_ae = detector.normalized_maps(x)
        p_padded = detector.padded_map(x)
        p_full, p_score = detector(x)
        p_original = ed.resize_map(p_padded, (300, 420))
    with paddle.no_grad():
        p_raw_st, p_raw_ae = detector.distance_maps(x)
    t_raw = torch_predict(torch.from_numpy(test_batch), teacher, student, autoencoder, t_mean, t_std, channels=384)
    for ours, reference in ((p_raw_st, t_raw[1]), (p_raw_ae, t_raw[2])):
        assert relative_error(ours.numpy(), reference.numpy()) < 1e-5
    # The normalisation 0.1 * (m - q_a) / (q_b - q_a) amplifies the raw maps' float32 error by 0.1 * m / (q_b - q_a)
    # (random networks give nearly flat maps, so q_b - q_a is small): scale the tolerance accordingly.
    amplification = max(0.1 * float(t_raw[i].abs().max()) / float(t_q[j + 1] - t_q[j]) for i, j in ((1, 0), (2, 2)))
    tolerance = 1e-5 * max(float(t_full.abs().max()), amplification)
    for ours, reference in ((p_st, t_st), (p_ae, t_ae), (p_combined, t_combined), (p_padded, t_padded),
                            (p_full, t_full), (p_original, t_original)):
        assert ours.shape == list(reference.shape)
        assert float(np.abs(ours.numpy() - reference.numpy()).max()) <= tolerance
    assert np.all(p_padded.numpy()[:, :, :4] == 0) and np.all(p_padded.numpy()[:, :, :, -4:] == 0)
    np.testing.assert_allclose(p_score.numpy(), t_full.amax(dim=(1, 2, 3)).numpy(), rtol=0, atol=tolerance)


# ----------------------------------------------------------------------------------------------------------------
# Losses and training
# ----------------------------------------------------------------------------------------------------------------
def test_training_losses_match_torch(reduced_pair):
    """All terms of one training iteration on a fixed (x, x', P) triplet, with C = 384 (1.2M distances)."""
    teacher, student, autoencoder, detector = reduced_pair
    mean = torch.rand(1, 384, 1, 1) - 0.5
    std = torch.rand(1, 384, 1, 1) + 0.5
    detector.set_teacher_statistics(mean.numpy(), std.numpy())
    image_st, image_ae, image_penalty = images(8, 3)
    reference = torch_train_terms(teacher, student, autoencoder, mean, std, torch.from_numpy(image_st),
                                  torch.from_numpy(image_ae), torch.from_numpy(image_penalty), 384)
    ours = el.training_losses(detector, paddle.to_tensor(image_st), paddle.to_tensor(image_ae),
                              paddle.to_tensor(image_penalty)).as_floats()
    assert ours["hard_count"] == int(reference["hard_count"]) >= 0.001 * 384 * 56 * 56
    for name, value in reference.items():
        assert abs(ours[name] - float(value.detach())) <= 1e-6 * abs(float(value.detach())), name
    # the pieces on their own, and the pretraining MSE
    a, b = paddle.to_tensor(image_st), paddle.to_tensor(image_ae)
    assert abs(float(el.pretraining_loss(a, b)) - float(F.mse_loss(torch.from_numpy(image_st),
                                                                   torch.from_numpy(image_ae)))) < 1e-6
    without_penalty = el.training_losses(detector, paddle.to_tensor(image_st), paddle.to_tensor(image_ae))
    assert without_penalty.penalty is None
    expected = float((reference["total"] - reference["penalty"]).detach())
    assert abs(float(without_penalty.total) - expected) <= 1e-6 * expected
    reference_without = torch_train_terms(teacher, student, autoencoder, mean, std, torch.from_numpy(image_st),
                                          torch.from_numpy(image_ae), None, 384)
    assert reference_without["penalty"] is None
    assert abs(float(without_penalty.total) - float(reference_without["total"].detach())) <= 1e-6 * expected


def test_hard_loss_threshold_ties_match_torch():
    """d_hard landing exactly on (tied) distances: ``>=`` keeps all of them, as the reference does."""
    rng = np.random.default_rng(14)
    for shape in ((1, 1001, 1, 1), (2, 8, 25, 25)):
        teacher = np.round(rng.random(shape) * 4).astype(np.float32)   # distances take few distinct values
        student = np.zeros(shape, np.float32)
        distance = (torch.from_numpy(teacher) - torch.from_numpy(student)) ** 2
        d_hard = torch.quantile(distance, q=0.999)
        loss, ours_d_hard, count = el.hard_feature_loss(paddle.to_tensor(teacher), paddle.to_tensor(student))
        assert float(ours_d_hard) == float(d_hard)
        assert int(count) == int((distance >= d_hard).sum()) > int((distance > d_hard).sum())
        assert abs(float(loss) - float(torch.mean(distance[distance >= d_hard]))) <= 1e-7 * float(d_hard)


def test_five_adam_steps_match_torch_float64_within_float32_spread():
    """Five iterations of the training loop (Adam lr 1e-4, weight decay 1e-5, dropout off) on fixed triplets.

    Paddle float32 must stay as close to a torch float64 run as torch float32 does (losses per step, and the
    first-step gradients of the student's and the autoencoder's last convs); step 0 equals torch float32.
    """
    channels = 16
    torch.manual_seed(9)
    teacher = torch_pdn_small(channels, hidden=TINY_HIDDEN).eval()
    student = torch_pdn_small(2 * channels, hidden=TINY_HIDDEN).train()
    autoencoder = torch_autoencoder(channels, hidden=TINY_AE_HIDDEN, dropout=0.0).train()
    detector = ed.EfficientADDetector(
        to_paddle(teacher, em.PDNSmall(channels, hidden_channels=TINY_HIDDEN)),
        to_paddle(student, em.PDNSmall(2 * channels, hidden_channels=TINY_HIDDEN)),
        to_paddle(autoencoder, em.Autoencoder(channels, hidden_channels=TINY_AE_HIDDEN, dropout=0.0)))
    detector.train()
    train = images(10, 3)
    mean, std = torch_teacher_normalization(teacher, [torch.from_numpy(b) for b in train])
    detector.set_teacher_statistics(mean.numpy(), std.numpy())
    nets64 = [copy.deepcopy(m).double() for m in (teacher, student, autoencoder)]
    optimizers = {
        "torch": torch.optim.Adam(itertools.chain(student.parameters(), autoencoder.parameters()), lr=1e-4,
                                  weight_decay=1e-5),
        "float64": torch.optim.Adam(itertools.chain(nets64[1].parameters(), nets64[2].parameters()), lr=1e-4,
                                    weight_decay=1e-5),
        "paddle": paddle.optimizer.Adam(learning_rate=1e-4, weight_decay=1e-5,
                                        parameters=detector.trainable_parameters()),
    }
    losses = {name: [] for name in optimizers}
    for step in range(5):
        triplet = images(20 + step, 3)
        t32 = torch_train_terms(teacher, student, autoencoder, mean, std, *map(torch.from_numpy, triplet), channels)
        t64 = torch_train_terms(*nets64, mean.double(), std.double(),
                                *(torch.from_numpy(b).double() for b in triplet), channels)
        ours = el.training_losses(detector, *map(paddle.to_tensor, triplet))
        for terms, optimizer in ((t32, optimizers["torch"]), (t64, optimizers["float64"])):
            optimizer.zero_grad()
            terms["total"].backward()
        optimizers["paddle"].clear_grad()
        ours.total.backward()
        if step == 0:
            for name, value in ours.as_floats().items():
                reference = float(t32[name].detach())
                assert abs(value - reference) <= 1e-6 * abs(reference), name
            for t32_conv, t64_conv, p_conv in ((student[8], nets64[1][8], detector.student[8]),
                                               (autoencoder[38], nets64[2][38], detector.autoencoder[38])):
                for attr in ("weight", "bias"):
                    exact = getattr(t64_conv, attr).grad.numpy()
                    spread = norm_error(getattr(t32_conv, attr).grad.numpy(), exact)
                    assert norm_error(getattr(p_conv, attr).grad.numpy(), exact) <= max(5 * spread, 1e-5)
        for optimizer in optimizers.values():
            optimizer.step()
        for name, terms in (("torch", t32), ("float64", t64)):
            losses[name].append(float(terms["total"].detach()))
        losses["paddle"].append(float(ours.total))
    exact = np.array(losses["float64"])
    spread = np.abs(np.array(losses["torch"]) - exact).max()
    assert np.abs(np.array(losses["paddle"]) - exact).max() <= max(5 * spread, 1e-6 * exact.max()), losses


# ----------------------------------------------------------------------------------------------------------------
# Teacher pretraining target
# ----------------------------------------------------------------------------------------------------------------
def test_pretraining_target_projection_matches_embed():
    """Unfold -> upsample -> adaptive pooling of ``embed`` equals the fixed-kernel convolutions, real channels."""
    rng = np.random.default_rng(11)
    layer2 = rng.random((2, 512, 8, 8)).astype(np.float32)     # non-negative like post-ReLU features
    layer3 = rng.random((2, 1024, 4, 4)).astype(np.float32)
    extractor = em.PretrainingTargetExtractor(backbone=FixedBackbone([layer2, layer3]))
    ours = extractor(paddle.zeros([2, 3, 64, 64])).numpy()
    reference = torch_embed_projection(torch.from_numpy(layer2), torch.from_numpy(layer3)).numpy()
    assert ours.shape == (2, 384, 8, 8)
    assert relative_error(ours, reference) < 1e-5
    assert extractor.state_dict() == {}   # the kernels are constants, not saved
