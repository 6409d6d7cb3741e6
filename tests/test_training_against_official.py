"""The production trainers against the official training loops, several steps (issue 21).

Each test runs a method's own ``train`` command on the tiny synthetic data: its optimiser builder, lr schedule,
frozen network in Paddle Inference, oneDNN convolution programs, loaders and data order, as in production. Observers
that pass everything through unchanged record each step's input batch, its loss and the trained weights before it,
and the weights after the last step. A torch re-statement of the official loop (hq-deng/RD4AD ``main.py``,
Niousha12/Knowledge_Distillation_AD ``train.py``, nelson1425/EfficientAD ``efficientad.py``), with the official
optimiser written out here (not read from the Paddle config), then runs the same steps on the same batches from the
same initial weights. Only the EfficientAD autoencoder's dropout is pinned (the same masks on both sides).

Each torch step starts from the trainer's weights before that step; torch's Adam keeps its own moments and step
count, so the moments are the official optimiser's own, built from the whole run. Why not let torch run free: Adam's
first steps move every weight by about lr whatever the size of its gradient, so a gradient at rounding level turns
into a full step of either sign, and a free float32 run leaves the float64 one quickly (torch's own float32 run was
8 % (KDAD) and 2 % (RD4AD) off float64 in the weights' change after 6 steps); a wrong beta1 (KDAD 0.9 -> 0.8) stays
within that. Step by step, the errors do not compound and the same mutation is 20x torch's spread.

Tolerance, measured in the test: torch float64 is the reference; torch float32 on 1 thread and on 2 threads are
compared with it, and the larger error is torch's own float32 spread. The trainer's error must be at most
``FACTOR`` (RD4AD: ``RD4AD_FACTOR``) times that spread, with floors ``LOSS_FLOOR`` (relative loss) and
``WEIGHT_FLOOR`` (weights' error relative to the step's change). Mutations checked by hand (the tests fail with them,
pass without): Adam beta1 in RD4AD 0.5 -> 0.9 (error 1.8 against a tolerance of 0.13), in KDAD 0.9 -> 0.8 (0.15
against 0.031), in ``common.training.optimizer`` 0.9 -> 0.8 (EfficientAD 0.052 against 5.7e-4), EfficientAD with
``paddle.optimizer.AdamW`` (decoupled decay: 0.62, and the optimiser test) or its lr drop one step late.
"""
import os

import numpy as np
import paddle
import pytest

from method_harness import method_package, train_tiny

FACTOR = 4
# RD4AD's frozen teacher runs in Paddle Inference (oneDNN, BatchNorm folded into the convolutions). Its features are
# as close to float64 as the dygraph teacher's (1e-6 of the maximum, the same zeros), but at this tiny random-init
# size the first OCBE block (a 2x2 map at batch 4: BatchNorm over 16 values) turns that rounding into sign flips of
# ~2k gradient components of its convolutions, which Adam's first step makes full lr steps. Measured on the first
# batch, in a float64 torch student: the norm of the sign differences is 86 with the Inference features, 4.5 with
# the dygraph teacher's; the trainer's weight error is 5.6e-2 of the step's change against torch float32's 2.6e-3
# (4.8e-3 with the teacher in dygraph). Losses stay within 1e-7, running statistics within 1.1e-6.
RD4AD_FACTOR = 50
LOSS_FLOOR = 1e-6
WEIGHT_FLOOR = 1e-6


# ----------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------
def _torch():
    return pytest.importorskip("torch")


def to_torch_names(state):
    """A Paddle state dict (numpy values) with torch's BatchNorm buffer names."""
    out = {}
    for key, value in state.items():
        key = key.replace("._mean", ".running_mean").replace("._variance", ".running_var")
        out[key] = np.array(value)
    return out


def numpy_state(layer):
    return {k: v.numpy().copy() for k, v in layer.state_dict().items()}


def load_torch(module, state, allowed_missing=()):
    """Load ``state`` (torch names, numpy) into ``module``: every key of ``state`` used, and no module key left out
    but ``num_batches_tracked`` and the prefixes in ``allowed_missing``."""
    torch = _torch()
    own = module.state_dict()
    assert set(state) <= set(own), sorted(set(state) - set(own))[:5]
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")
               and not k.startswith(tuple(allowed_missing))]
    assert not missing, missing[:5]
    for key, value in state.items():
        assert tuple(own[key].shape) == value.shape, key
    module.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, strict=False)
    return module


def group_error(ours, reference, group, before):
    """``||ours - reference|| / ||reference - before||`` over all tensors of ``group`` (names ending with one of its
    suffixes) taken as one vector: the error relative to the size of one step's change."""
    keys = [k for k in sorted(reference) if k.endswith(group)]
    if not keys:
        return None

    def flat(state):
        return np.concatenate([np.ravel(state[k]).astype(np.float64) for k in keys])

    return float(np.linalg.norm(flat(ours) - flat(reference)) / np.linalg.norm(flat(reference) - flat(before)))


PARAMETERS, RUNNING_STATISTICS = (".weight", ".bias"), (".running_mean", ".running_var")
FLOORS = {"loss": LOSS_FLOOR, "parameters": WEIGHT_FLOOR, "running statistics": WEIGHT_FLOOR}


def step_errors(losses, weights, reference_losses, reference_weights, before):
    """Per step: the loss's relative error, and the error of the parameters and of the BatchNorm running statistics
    after the step relative to the step's change (both from the same weights ``before``)."""
    found = {"loss": [], "parameters": [], "running statistics": []}
    for k, ref_loss in enumerate(reference_losses):
        found["loss"].append(abs(losses[k] / ref_loss - 1))
        for name, group in (("parameters", PARAMETERS), ("running statistics", RUNNING_STATISTICS)):
            error = group_error(weights[k], reference_weights[k], group, before[k])
            if error is not None:
                found[name].append(error)
    return {k: max(v) for k, v in found.items() if v}


def check_against_reference(record, runs, label, factor=FACTOR):
    """``record``: the trainer's steps (``batches``, ``losses``, ``before`` = the trained weights before each step in
    torch names, ``after`` = after the last step); ``runs``: {name: (losses, weights after each step)} of the
    official step on torch, float64 and float32 on 1 and 2 threads. The trainer's errors against float64 must be at
    most ``factor`` times torch float32's (or the floors)."""
    afters = record.before[1:] + [record.after]
    exact_losses, exact_weights = runs["float64"]
    ours = step_errors(record.losses, afters, exact_losses, exact_weights, record.before)
    torch32 = [step_errors(*runs[k], exact_losses, exact_weights, record.before) for k in ("float32-1", "float32-2")]
    print(f"{label}: {len(record.losses)} steps; largest error per step against torch float64 of torch float32 "
          f"(1, 2 threads) and of the trainer: " + "; ".join(
              f"{k} {torch32[0][k]:.1e}, {torch32[1][k]:.1e}, trainer {ours[k]:.1e}" for k in ours))
    for key, error in ours.items():
        spread = max(t[key] for t in torch32)
        assert error <= factor * max(spread, FLOORS[key]), (key, error, spread, record.losses, exact_losses)


def torch_runs(run):
    """``run(dtype)`` with torch float64 (1 thread) and float32 on 1 and 2 threads."""
    torch = _torch()
    threads = torch.get_num_threads()
    try:
        results = {}
        for name, dtype, count in (("float64", torch.float64, 1), ("float32-1", torch.float32, 1),
                                   ("float32-2", torch.float32, 2)):
            torch.set_num_threads(count)
            results[name] = run(dtype)
        return results
    finally:
        torch.set_num_threads(threads)


def official_steps(record, modules, optimizer, step, dtype):
    """The official loop over the recorded batches, each step starting from the trainer's weights before it (torch's
    Adam keeps its own moments and step count); returns (losses, weights after each step)."""
    torch = _torch()
    losses, afters = [], []
    for batch, before in zip(record.batches, record.before):
        with torch.no_grad():  # every tensor of the torch modules from the trainer's (none left at its init)
            for prefix, module in modules.items():
                for key, tensor in module.state_dict().items():
                    if not key.endswith("num_batches_tracked"):
                        tensor.copy_(torch.from_numpy(np.asarray(before[f"{prefix}.{key}"])).to(tensor.dtype))
        loss = step(batch, dtype)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        afters.append({f"{prefix}.{k}": v.detach().double().numpy().copy() for prefix, module in modules.items()
                       for k, v in module.state_dict().items()})
    return losses, afters


class Record:
    """What the trainer did: each step's input batch, loss and trained weights before it, and the weights after."""

    def __init__(self, trained_state):
        self.trained_state = trained_state  # () -> the trained modules' state in torch names
        self.batches, self.losses, self.before, self.after = [], [], [], None

    def finish(self):
        self.after = self.trained_state()


class EpochRecorder(Record):
    """Wraps ``train_epoch`` of an epoch-based trainer: records each step, changes nothing."""

    def __init__(self, train_epoch, trained_state):
        super().__init__(trained_state)
        self.train_epoch = train_epoch

    def __call__(self, loader, batch_loss, *args, **kwargs):
        def observed(batch):
            self.before.append(self.trained_state())
            loss = batch_loss(batch)
            self.batches.append(batch[0].numpy().copy())
            self.losses.append(float(loss))
            return loss

        return self.train_epoch(loader, observed, *args, **kwargs)


def prefixed(prefix, layer):
    return {f"{prefix}.{k}": v for k, v in to_torch_names(numpy_state(layer)).items()}


# ----------------------------------------------------------------------------------------------------------------
# RD4AD
# ----------------------------------------------------------------------------------------------------------------
RD4AD_LR, RD4AD_BETAS = 0.005, (0.5, 0.999)  # official main.py: Adam(..., lr=0.005, betas=(0.5, 0.999))


@pytest.mark.filterwarnings("ignore:When training")
def test_rd4ad_trainer_follows_the_official_loop_over_several_steps(synthetic_root, tmp_path, monkeypatch):
    torch = _torch()
    method_package("rd4ad")
    from test_rd4ad_reference import TorchDecoder, TorchOCBE, TorchTeacher, torch_flattened_loss

    from rd4ad import trainer

    made = {}

    def recording_model(*args, **kwargs):
        model = made["model"] = trainer_model(*args, **kwargs)
        made["teacher"] = to_torch_names(numpy_state(model.teacher))
        return model

    trainer_model = trainer.ReverseDistillation
    recorder = EpochRecorder(trainer.train_epoch,
                             lambda: prefixed("bn", made["model"].bn) | prefixed("decoder", made["model"].decoder))
    monkeypatch.setattr(trainer, "ReverseDistillation", recording_model)
    monkeypatch.setattr(trainer, "train_epoch", recorder)
    train_tiny("rd4ad", synthetic_root, str(tmp_path), "--epochs", 2)
    recorder.finish()
    assert len(recorder.losses) >= 5

    def official(dtype):
        teacher = load_torch(TorchTeacher("resnet18"), made["teacher"], ("layer4", "fc")).to(dtype).eval()
        bn, decoder = TorchOCBE("resnet18").to(dtype).train(), TorchDecoder("resnet18").to(dtype).train()
        optimizer = torch.optim.Adam(list(decoder.parameters()) + list(bn.parameters()), lr=RD4AD_LR,
                                     betas=RD4AD_BETAS)

        def step(batch, dtype):
            inputs = teacher(torch.from_numpy(batch).to(dtype))
            return torch_flattened_loss(inputs, decoder(bn(inputs)))

        return official_steps(recorder, {"bn": bn, "decoder": decoder}, optimizer, step, dtype)

    check_against_reference(recorder, torch_runs(official), "RD4AD", RD4AD_FACTOR)


# ----------------------------------------------------------------------------------------------------------------
# KDAD
# ----------------------------------------------------------------------------------------------------------------
KDAD_LR, KDAD_LAMDA = 1e-3, 0.5  # official train.py: Adam(model.parameters(), lr=learning_rate); configs: lamda 0.5


@pytest.mark.filterwarnings("ignore:When training")
def test_kdad_trainer_follows_the_official_loop_over_several_steps(synthetic_root, tmp_path, monkeypatch):
    torch = _torch()
    method_package("kdad")
    from test_kdad_reference import OfficialCloner, official_expert, official_mse_direction_loss

    from kdad import checkpoint as kdad_checkpoint
    from kdad import trainer
    from torch_reference import TorchVGG16

    made = {}
    build_network = kdad_checkpoint.build_network

    def recording_network(config):
        network = made["network"] = build_network(config)
        made["expert"] = to_torch_names(numpy_state(network.expert))
        return network

    recorder = EpochRecorder(trainer.train_epoch, lambda: prefixed("cloner", made["network"].cloner))
    monkeypatch.setattr(kdad_checkpoint, "build_network", recording_network)
    monkeypatch.setattr(trainer, "train_epoch", recorder)
    train_tiny("kdad", synthetic_root, str(tmp_path), "--epochs", 1)
    recorder.finish()
    assert len(recorder.losses) >= 5  # passes 0..1

    def official(dtype):
        vgg = TorchVGG16()
        load_torch(vgg, made["expert"], ("classifier",))
        expert = vgg.features.to(dtype).eval()
        cloner = OfficialCloner().to(dtype).train()
        optimizer = torch.optim.Adam(cloner.parameters(), lr=KDAD_LR)

        def step(batch, dtype):
            x = torch.from_numpy(batch).to(dtype)
            with torch.no_grad():
                real = official_expert(expert, x)
            return official_mse_direction_loss(cloner(x), real, KDAD_LAMDA)

        return official_steps(recorder, {"cloner": cloner}, optimizer, step, dtype)

    check_against_reference(recorder, torch_runs(official), "KDAD")


# ----------------------------------------------------------------------------------------------------------------
# EfficientAD
# ----------------------------------------------------------------------------------------------------------------
EFFICIENTAD_LR, EFFICIENTAD_WEIGHT_DECAY = 1e-4, 1e-5  # official: Adam(lr=1e-4, weight_decay=1e-5)
EFFICIENTAD_STEPS = 6  # StepLR(step_size=int(0.95 * 6) = 5): the sixth step runs at lr 1e-5
DROPOUT = 0.2


class PinnedDropout:
    """The same dropout masks in Paddle and torch: the n-th dropout call of a run gets mask n of a fixed stream."""

    def __init__(self):
        self.calls = 0

    def mask(self, shape):
        rng = np.random.default_rng(1000 + self.calls)
        self.calls += 1
        return (rng.random(shape) >= DROPOUT).astype(np.float64) / (1 - DROPOUT)


def _penalty_folder(folder, count=3, size=48):
    from PIL import Image

    os.makedirs(folder)
    rng = np.random.default_rng(5)
    for index in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
            os.path.join(folder, f"penalty_{index}.png"))
    return str(folder)


@pytest.mark.filterwarnings("ignore:When training")
def test_efficientad_trainer_follows_the_official_loop_over_several_steps(synthetic_root, tmp_path, monkeypatch):
    """Student + autoencoder with a penalty image per step, the StepLR drop at int(0.95 * steps), coupled L2."""
    torch = _torch()
    method_package("efficientad")
    from test_efficientad_reference import torch_autoencoder, torch_pdn_small, torch_train_terms

    from efficientad import checkpoint as ead_checkpoint
    from efficientad import trainer

    made = {}
    paddle_dropout = PinnedDropout()
    build_detector = ead_checkpoint.build_detector_for
    train_step = trainer.train_step

    def trained_state():
        return prefixed("student", made["detector"].student) | prefixed("autoencoder", made["detector"].autoencoder)

    record = Record(trained_state)
    record.lrs, record.images = [], []

    def pinned(layer, x):
        mask = paddle.to_tensor(paddle_dropout.mask(x.shape).astype(np.float32)) if layer.training else None
        return x if mask is None else x * mask

    def recording_detector(config):
        detector = made["detector"] = build_detector(config)
        for layer in detector.sublayers():
            if isinstance(layer, paddle.nn.Dropout):
                assert layer.p == DROPOUT
                object.__setattr__(layer, "forward", lambda x, layer=layer: pinned(layer, x))
        return detector

    def recording_step(detector, optimizer, scheduler, image_st, image_ae, image_penalty=None, q=0.999,
                       teacher=None):
        if "teacher" not in made:
            made["teacher"] = numpy_state(detector.teacher)
            made["mean"], made["std"] = detector.teacher_mean.numpy(), detector.teacher_std.numpy()
        record.before.append(trained_state())
        record.lrs.append(optimizer.get_lr())
        losses = train_step(detector, optimizer, scheduler, image_st, image_ae, image_penalty, q, teacher)
        record.batches.append([image_st.numpy().copy(), image_ae.numpy().copy(), image_penalty.numpy().copy()])
        record.losses.append(float(losses.total))
        assert q == 0.999
        return losses

    monkeypatch.setattr(ead_checkpoint, "build_detector_for", recording_detector)
    monkeypatch.setattr(trainer, "train_step", recording_step)
    train_tiny("efficientad", synthetic_root, str(tmp_path / "out"), "--train_steps", EFFICIENTAD_STEPS,
               "--save_interval", EFFICIENTAD_STEPS, "--penalty_dir", _penalty_folder(tmp_path / "penalty"))
    record.finish()
    assert len(record.losses) == EFFICIENTAD_STEPS and paddle_dropout.calls == 6 * EFFICIENTAD_STEPS
    # the official StepLR: lr 1e-4 until the drop after int(0.95 * steps) = 5 steps
    assert record.lrs == pytest.approx([EFFICIENTAD_LR] * 5 + [EFFICIENTAD_LR * 0.1], rel=1e-12)
    detector = made["detector"]
    channels = detector.out_channels

    class TorchPinnedDropout(torch.nn.Module):
        def __init__(self, masks):
            super().__init__()
            self.masks = masks

        def forward(self, x):
            return x * torch.from_numpy(self.masks.mask(tuple(x.shape))).to(x.dtype) if self.training else x

    def official(dtype):
        masks = PinnedDropout()
        hidden = (detector.teacher[0].weight.shape[0], detector.teacher[3].weight.shape[0])
        ae_hidden = (detector.autoencoder[0].weight.shape[0], detector.autoencoder[4].weight.shape[0])
        teacher = load_torch(torch_pdn_small(channels, hidden=hidden), made["teacher"]).to(dtype).eval()
        student = torch_pdn_small(2 * channels, hidden=hidden).to(dtype).train()
        autoencoder = torch_autoencoder(channels, hidden=ae_hidden, dropout=DROPOUT).to(dtype).train()
        for index, module in enumerate(autoencoder):
            if isinstance(module, torch.nn.Dropout):
                autoencoder[index] = TorchPinnedDropout(masks)
        mean, std = torch.from_numpy(made["mean"]).to(dtype), torch.from_numpy(made["std"]).to(dtype)
        optimizer = torch.optim.Adam(list(student.parameters()) + list(autoencoder.parameters()), lr=EFFICIENTAD_LR,
                                     weight_decay=EFFICIENTAD_WEIGHT_DECAY)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=int(0.95 * EFFICIENTAD_STEPS), gamma=0.1)

        def step(images, dtype):
            if optimizer.state:  # the previous step is over: the official loop steps the scheduler after it
                scheduler.step()
            terms = torch_train_terms(teacher, student, autoencoder, mean, std,
                                      *(torch.from_numpy(image).to(dtype) for image in images), channels)
            return terms["total"]

        return official_steps(record, {"student": student, "autoencoder": autoencoder}, optimizer, step, dtype)

    check_against_reference(record, torch_runs(official), "EfficientAD")


def test_efficientad_optimizer_couples_weight_decay_and_drops_the_lr_as_the_official_one():
    """``trainer.build_optimizer`` against torch ``Adam(lr=1e-4, weight_decay=1e-5)`` + ``StepLR(int(0.95 * n))``
    on weights of 1 with a gradient far below the weight decay's: coupled L2 (added to the gradient, then
    normalised by Adam) moves each weight by ~lr per step; decoupled decay (AdamW) would move it by lr * 1e-5."""
    torch = _torch()
    method_package("efficientad")
    from efficientad import trainer
    from efficientad.config import Config

    config = Config(train_steps=20)
    start = np.linspace(0.5, 1.5, 8).astype(np.float32)
    weight = paddle.create_parameter([8], "float32", default_initializer=paddle.nn.initializer.Assign(start))
    holder = type("Holder", (), {"trainable_parameters": lambda self: [weight]})()
    optimizer, scheduler = trainer.build_optimizer(holder, config)
    reference = torch.nn.Parameter(torch.from_numpy(start.astype(np.float64)))
    torch_optimizer = torch.optim.Adam([reference], lr=1e-4, weight_decay=1e-5)
    torch_scheduler = torch.optim.lr_scheduler.StepLR(torch_optimizer, step_size=int(0.95 * 20), gamma=0.1)
    gradient = np.linspace(-1e-9, 1e-9, 8)
    lrs = []
    for _ in range(20):
        lrs.append((optimizer.get_lr(), torch_optimizer.param_groups[0]["lr"]))
        loss = (weight * paddle.to_tensor(gradient.astype(np.float32))).sum()
        optimizer.clear_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        torch_optimizer.zero_grad()
        (reference * torch.from_numpy(gradient)).sum().backward()
        torch_optimizer.step()
        torch_scheduler.step()
    assert [a for a, _ in lrs] == pytest.approx([b for _, b in lrs], rel=1e-12)
    assert lrs[18][0] == pytest.approx(1e-4) and lrs[19][0] == pytest.approx(1e-5)  # drop at int(0.95 * 20) = 19
    moved = start - weight.numpy()
    assert moved.min() > 1e-3  # 19 steps of ~1e-4 and one of ~1e-5: coupled L2 dominates the update
    np.testing.assert_allclose(weight.numpy(), reference.detach().numpy(), rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# OrthoAD
# ----------------------------------------------------------------------------------------------------------------
OFFICIAL_EPS = 1e-2  # official train.py: EPSILON = 1e-2 (PaDiM's) outside STC


def official_orthoad_fit(batches, W, dtype):
    """jnhwkim/orthoad ``train.py``: X += out outᵀ and X_mean += out per position over the fit images, both / N,
    X -= mean meanᵀ (the biased covariance), then ``MahEvaluator.build``: (X + eps I).inverse()."""
    torch = _torch()
    W = torch.from_numpy(W).to(dtype)
    X = X_mean = None
    count = 0
    for features in batches:
        out = torch.einsum("bchw, cd -> bdhw", torch.from_numpy(features).to(dtype), W)
        if X is None:
            _, _, h, w = out.shape
            X = torch.zeros(h, w, W.shape[1], W.shape[1], dtype=dtype)
            X_mean = torch.zeros(h, w, W.shape[1], dtype=dtype)
        X += torch.einsum("bchw, bdhw -> hwcd", out, out)
        X_mean += out.sum(0).transpose(0, 1).transpose(1, 2)
        count += len(features)
    X /= count
    X_mean /= count
    X -= torch.einsum("hwc, hwd -> hwcd", X_mean, X_mean)
    precision = (X + OFFICIAL_EPS * torch.eye(X.shape[-1], dtype=dtype)).inverse()
    h, w = X.shape[:2]
    return X_mean.reshape(h * w, -1).double().numpy(), precision.reshape(h * w, *precision.shape[2:]).double().numpy()


def test_orthoad_fit_gives_the_official_mean_and_inverse_covariance(synthetic_root, tmp_path, monkeypatch):
    """The ``train`` command's fit (Paddle Inference embedding, streamed statistics, the precision factor saved)
    against the official statistics on the same features: the backbone's unprojected embedding of the images the
    fit saw, in the order it saw them, projected and accumulated as the official code does. Tolerance: ``FACTOR``
    times torch float32's error against float64 (floors 1e-6 of the largest value)."""
    torch = _torch()
    method_package("orthoad")
    from orthoad import checkpoint as orthoad_checkpoint
    from orthoad import trainer

    seen = {}
    fit_statistics = trainer.fit_statistics

    def recording(embedder, loader, *args, **kwargs):
        batches = list(loader)
        seen["embedder"], seen["images"] = embedder, [batch[0].numpy().copy() for batch in batches]
        return fit_statistics(embedder, batches, *args, **kwargs)

    monkeypatch.setattr(trainer, "fit_statistics", recording)
    train_tiny("orthoad", synthetic_root, str(tmp_path))
    detector, config, _ = orthoad_checkpoint.load(str(tmp_path / "bottle"))
    assert config.eps == OFFICIAL_EPS and not config.unbiased
    mean = detector.scorer.mean.numpy().T.astype(np.float64)
    factor = detector.scorer.factor.numpy().astype(np.float64)
    precision = np.einsum("pji,pjk->pik", factor, factor)
    embedder = seen["embedder"]
    embedder.eval()
    with paddle.no_grad():
        features = [embedder.embedding(paddle.to_tensor(x)).numpy() for x in seen["images"]]
    W = embedder.projection.numpy()
    assert sum(len(x) for x in seen["images"]) == 10  # the 12 synthetic images but 2 held out for thresholds
    exact_mean, exact_precision = official_orthoad_fit(features, W, torch.float64)
    mean32, precision32 = official_orthoad_fit(features, W, torch.float32)

    def error(ours, reference):
        return float(np.abs(ours - reference).max() / np.abs(reference).max())

    for name, ours, torch32, exact in (("mean", mean, mean32, exact_mean),
                                       ("inverse covariance", precision, precision32, exact_precision)):
        spread = error(torch32, exact)
        print(f"OrthoAD {name}: error against float64 of torch float32 {spread:.1e}, the fit {error(ours, exact):.1e}")
        assert error(ours, exact) <= FACTOR * max(spread, 1e-6), name


@pytest.mark.parametrize("shape", [(4, 3, 2, 2), (2, 5, 7, 3), (16, 8, 8, 8)])
def test_trained_batchnorm_keeps_torchs_running_statistics(shape):
    """RD4AD's and KDAD's trained BatchNorm (common.networks.batchnorm) against torch's over 5 train-mode steps and
    an eval step: running mean and variance (torch averages the unbiased batch variance, plain Paddle the biased
    one: 6.7 % apart at the 2x2 shape), outputs and input gradients."""
    torch = _torch()
    from common.networks.batchnorm import BatchNorm2D

    rng = np.random.default_rng(sum(shape))
    ours, plain = BatchNorm2D(shape[1]), paddle.nn.BatchNorm2D(shape[1])
    reference = torch.nn.BatchNorm2d(shape[1]).double()
    for layer in (ours, plain, reference):
        layer.train()
    for _ in range(5):
        x = (3 * rng.standard_normal(shape) + 1).astype(np.float32)
        upstream = rng.standard_normal(shape)
        tensor = paddle.to_tensor(x, stop_gradient=False)
        (ours(tensor) * paddle.to_tensor(upstream.astype(np.float32))).sum().backward()
        plain(paddle.to_tensor(x))
        reference_x = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
        reference_out = reference(reference_x)
        (reference_out * torch.from_numpy(upstream)).sum().backward()
        np.testing.assert_allclose(tensor.grad.numpy(), reference_x.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours._mean.numpy(), reference.running_mean.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ours._variance.numpy(), reference.running_var.numpy(), rtol=1e-6)
    count = shape[0] * shape[2] * shape[3]
    if count < 100:  # plain Paddle's update is visibly off at small maps, so the check above can fail
        assert np.abs(plain._variance.numpy() / reference.running_var.numpy() - 1).max() > 1e-3
    ours.eval()
    reference.eval()
    x = rng.standard_normal(shape).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x.astype(np.float64))).numpy()
    np.testing.assert_allclose(ours(paddle.to_tensor(x)).numpy(), expected, rtol=1e-5, atol=1e-5)
