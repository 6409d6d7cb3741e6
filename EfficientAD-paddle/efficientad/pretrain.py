"""Teacher distillation as nelson1425 ``pretraining.py``, on any image folder (ImageNet train for the paper).

Target: Wide-ResNet-101-2 ``layer2`` + ``layer3`` of the image at 512 px, PatchCore-style embedded to 384x64x64
(:class:`efficientad.model.PretrainingTargetExtractor`), normalised per channel with the mean and std of the
targets of ``norm_images`` images (two passes drawing different images from the same endless loader, as the
reference's ``feature_normalization``). Student: the padded PDN on the same image at 256 px (64x64 output).
Loss ``mean((target - PDN(x))**2)``; Adam lr 1e-4, weight decay 1e-5; 60,000 iterations at batch 16; seed 42;
``RandomGrayscale(0.1)`` applied to the image before both views.

The result is the PDN's state dict (``teacher_small.pdparams``): the padded and unpadded PDNs share their keys,
so it loads as the unpadded teacher of :mod:`efficientad.trainer` (the reference's ``teacher_small.pth`` is the
same). Resumable (``--resume``: model, optimiser, normalisation, loader position), atomic writes, NaN stop.
"""
import argparse
import math
import os
import time

import paddle
from tqdm import tqdm

from common.cli.args import add_runtime_args
from common.core.errors import UserError, main_guard
from common.core.files import atomic_save
from common.core.runtime import configure, device_line
from common.data.images import image_paths
from common.data.loader import Loader
from common.networks.backbones import RESNET_ARCHS, ResNetFeatures
from common.training import distributed
from common.training.loop import TrainingDiverged
from common.training.onednn import onednn_convolutions
from common.training.optimizer import adam

from .checkpoint import build_pdn_for, pack_object, unpack_object
from .config import Config
from .data import PRETRAIN_GRAYSCALE, PretrainingItems, grayscale_stream
from .detector import channel_statistics
from .loss import pretraining_loss
from .model import IMAGE_SIZE, MODEL_SIZES, OUT_CHANNELS, PRETRAIN_LAYERS, PretrainingTargetExtractor

STATE_SUFFIX = ".state.pdparams"


def _batches(paths, stream, batch_size, count, num_workers, rank=0, world=1):
    """``count`` batches of (extractor image, PDN image) drawn from ``stream`` (crossing passes as needed); in a
    data-parallel run, process ``rank`` of ``world`` gets its share of each global batch."""
    done = 0
    while done < count:
        entries = stream.take(batch_size * (count - done))
        items = PretrainingItems(paths, entries, IMAGE_SIZE)
        if world > 1:
            sharded = distributed.ShardedBatches(len(items), batch_size, rank, world, shuffle=False)
            loader = Loader(items, batch_sampler=sharded, num_workers=num_workers)
        else:
            loader = Loader(items, batch_size, num_workers=num_workers)
        for batch in loader:
            yield batch
            done += 1


def target_statistics(extractor, paths, stream, batch_size, norm_images, num_workers=0):
    """Channel (mean, std) of the extractor targets over ``norm_images`` images per pass (reference
    ``feature_normalization``: batches until the image count reaches ``norm_images``)."""
    batches = max(1, math.ceil(int(norm_images) / int(batch_size)))

    def extractor_images():
        for batch in tqdm(_batches(paths, stream, batch_size, batches, num_workers), total=batches,
                          desc="target statistics", leave=False, dynamic_ncols=True, disable=None):
            yield batch[0]

    return channel_statistics(extractor, extractor_images(), extractor_images())


def distill_teacher(paths, config, output, steps, batch_size, norm_images, lr=1e-4, weight_decay=1e-5, seed=42,
                    save_interval=1000, resume=False, num_workers=0, desc="distill"):
    """Distil a PDN teacher (``config.model_size`` / ``out_channels`` / ``width_divisor``) from
    ``config.backbone`` on the images ``paths``; write its state dict to ``output`` atomically and return it.

    The resumable state is ``OUTPUT + ".state.pdparams"``; with ``resume`` an existing state is continued.
    """
    if not paths:
        raise UserError("no images to distil the teacher from")
    # python -m paddle.distributed.launch: the global batch is split across the processes, gradients averaged
    # (the PDN has no BatchNorm, so N processes take exactly the steps of one); only the first process writes.
    rank, world = distributed.init()
    main = rank == 0
    state_path = output + STATE_SUFFIX
    paddle.seed(seed)
    extractor = PretrainingTargetExtractor(
        out_channels=int(config.out_channels),
        backbone=ResNetFeatures(config.backbone, layers=PRETRAIN_LAYERS, weights=config.backbone_weights))
    pdn = build_pdn_for(config, int(config.out_channels), padding=True)
    optimizer = adam(pdn.parameters(), lr, weight_decay=weight_decay)
    stream = grayscale_stream(len(paths), seed, PRETRAIN_GRAYSCALE)
    done = 0
    if resume and os.path.isfile(state_path):
        state = paddle.load(state_path)
        pdn.set_state_dict(state["pdn"])
        optimizer.set_state_dict(state["optimizer"])
        stream.set_state(unpack_object(state["stream"]))
        mean, std = paddle.to_tensor(state["mean"]), paddle.to_tensor(state["std"])
        done = int(state["steps_done"])
        print(f"{desc}: resuming from {state_path} after step {done}")
    else:
        mean, std = target_statistics(extractor, paths, stream, batch_size, norm_images, num_workers)
    pdn.train()

    def save_state(steps_done):
        state = {"pdn": pdn.state_dict(), "optimizer": optimizer.state_dict(), "steps_done": steps_done,
                 "stream": pack_object(stream.state()), "mean": mean.numpy(), "std": std.numpy()}
        atomic_save(lambda tmp: paddle.save(state, tmp), state_path)

    network = distributed.data_parallel(pdn)
    bar = tqdm(total=steps, initial=done, desc=desc, dynamic_ncols=True, disable=None if main else True)
    while done < steps:
        chunk = min(steps - done, save_interval - done % save_interval)
        with onednn_convolutions(pdn):  # the PDN's convolutions forward and backward on oneDNN
            for image_fe, image_pdn in _batches(paths, stream, batch_size, chunk, num_workers, rank, world):
                target = (extractor(image_fe) - mean) / std
                loss = pretraining_loss(target, network(image_pdn))
                value = distributed.mean_over_processes(float(loss))
                if not math.isfinite(value):
                    bar.close()
                    raise TrainingDiverged(f"teacher distillation stopped: loss is {value} at step {done + 1}; "
                                           f"check the backbone weights ({config.backbone_weights}) and the images")
                optimizer.clear_grad()
                loss.backward()
                optimizer.step()
                done += 1
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}")
        if main:
            save_state(done)
    bar.close()
    teacher_state = {k: v.numpy() for k, v in pdn.state_dict().items()}
    if main:
        atomic_save(lambda tmp: paddle.save(teacher_state, tmp), output)
    distributed.barrier()
    return teacher_state


# -- pretrain_teacher.py -------------------------------------------------------------------------------------------
def build_parser():
    parser = argparse.ArgumentParser(description="Distil an EfficientAD teacher (PDN) from a ResNet on an image "
                                     "folder, as nelson1425 pretraining.py",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--image_dir", "--imagenet_train_path", dest="image_dir", required=True,
                        help="folder of training images, searched recursively (ImageNet train for the paper)")
    parser.add_argument("--output", default=None, help="teacher file (default output/teacher_SIZE.pdparams)")
    parser.add_argument("--model_size", choices=MODEL_SIZES, default="small")
    parser.add_argument("--out_channels", type=int, default=OUT_CHANNELS)
    parser.add_argument("--width_divisor", type=int, default=1, help="divide the PDN widths (tests only)")
    parser.add_argument("--backbone", choices=RESNET_ARCHS, default="wide_resnet101_2")
    parser.add_argument("--backbone_weights", default="imagenet", help="imagenet | random | FILE.pdparams")
    parser.add_argument("--steps", type=int, default=60000)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--norm_images", type=int, default=10000, help="images for the target mean and std")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--weight_decay", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--save_interval", type=int, default=1000, help="resumable state every N steps")
    parser.add_argument("--num_workers", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT.state.pdparams")
    add_runtime_args(parser)
    return parser


def run(argv=None):
    args = build_parser().parse_args(argv)
    print(device_line(*configure(args.device, args.threads, args.seed)))
    if min(args.steps, args.batch_size, args.norm_images, args.save_interval) < 1:
        raise UserError("--steps, --batch_size, --norm_images and --save_interval must be positive")
    if not os.path.isdir(args.image_dir):
        raise UserError(f"image folder not found: {args.image_dir}")
    paths = image_paths(args.image_dir)
    output = args.output or os.path.join("output", f"teacher_{args.model_size}.pdparams")
    config = Config(model_size=args.model_size, out_channels=args.out_channels, width_divisor=args.width_divisor,
                    backbone=args.backbone, backbone_weights=args.backbone_weights)
    start = time.time()
    print(f"distilling a PDN-{args.model_size[0].upper()} teacher from {args.backbone} on {len(paths)} images "
          f"({args.steps} steps, batch {args.batch_size}) -> {output}")
    distill_teacher(paths, config, output, args.steps, args.batch_size, args.norm_images, args.lr,
                    args.weight_decay, args.seed, args.save_interval, args.resume, args.num_workers)
    print(f"saved {output} ({time.time() - start:.1f} s); train with --teacher_weights {output}")
    return output


def main():
    return main_guard(run)()
