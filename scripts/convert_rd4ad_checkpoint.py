"""Convert an official RD4AD checkpoint (PyTorch) so that RD4AD-paddle can evaluate, predict and export it.

    python scripts/convert_rd4ad_checkpoint.py --ckpt wres50_bottle.pth --cls bottle \
        --output_dir RD4AD-paddle/output \
        --teacher wide_resnet50_2-95faca4d.pth --teacher_out RD4AD-paddle/weights/wide_resnet50_2_torchvision.pdparams
    cd RD4AD-paddle && python main.py --mode eval --cls bottle --output_dir output --data_dir DATA

``--ckpt`` is the file the official ``main.py`` saves (``{'bn': ..., 'decoder': ...}``); it is written to
``OUTPUT_DIR/CLASS/rd4ad.pdparams``. ``--teacher`` is the torchvision ImageNet state dict the official code
trained with (``wide_resnet50_2-95faca4d.pth``); it is converted once to ``--teacher_out`` and the checkpoint
points to it. Without ``--teacher`` the checkpoint uses ``--backbone_weights`` (default: paddle.vision's ImageNet
weights, which are not guaranteed to equal torchvision's). A converted model has no calibrated threshold: pass
``--threshold`` to predict/infer.
"""
import argparse
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, os.path.join(REPO_ROOT, "RD4AD-paddle"))

from common.backbones import check_arch, convert_torchvision_state_dict  # noqa: E402
from common.errors import UserError, main_guard  # noqa: E402
from common.results import atomic_save  # noqa: E402
from rd4ad.checkpoint import CHECKPOINT, save_official  # noqa: E402
from rd4ad.model import BACKBONES  # noqa: E402


def torch_load(path):
    """``torch.load`` (tensors only) -> the same nesting with NumPy arrays."""
    import torch

    if not os.path.isfile(path):
        raise UserError(f"file not found: {path}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types for a foreign or damaged file
        raise UserError(f"cannot load {path} with torch.load(weights_only=True): "
                        f"{' '.join(str(exc).split())[:300]}") from None

    def to_numpy(value):
        if isinstance(value, dict):
            return {k: to_numpy(v) for k, v in value.items()}
        if isinstance(value, torch.Tensor):
            return value.detach().cpu().numpy()
        return value

    return to_numpy(loaded)


def convert_teacher(src, dst, backbone):
    """torchvision ImageNet ``.pth`` -> paddle.vision ``.pdparams`` at ``dst``; returns ``dst``."""
    import paddle

    state = torch_load(src)
    if isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    converted = convert_torchvision_state_dict(state, backbone)
    atomic_save(lambda tmp: paddle.save(converted, tmp), dst)
    return dst


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="official checkpoint .pth ({'bn': ..., 'decoder': ...})")
    parser.add_argument("--cls", required=True, help="class the checkpoint was trained on")
    parser.add_argument("--output_dir", default=os.path.join("RD4AD-paddle", "output"),
                        help="RD4AD-paddle output folder; writes OUTPUT_DIR/CLASS/" + CHECKPOINT)
    parser.add_argument("--dst", default=None, help="explicit output file instead of OUTPUT_DIR/CLASS/" + CHECKPOINT)
    parser.add_argument("--backbone", default="wide_resnet50_2", help="teacher architecture of the checkpoint")
    parser.add_argument("--teacher", default=None, help="torchvision ImageNet .pth of the teacher to convert")
    parser.add_argument("--teacher_out", default=None,
                        help="where to write the converted teacher (default: next to the checkpoint)")
    parser.add_argument("--backbone_weights", default="imagenet",
                        help="teacher weights recorded in the checkpoint when --teacher is not given")
    parser.add_argument("--image_size", type=int, default=256, help="input size the checkpoint was trained at")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    check_arch(args.backbone, BACKBONES, "RD4AD backbone")
    dst = args.dst or os.path.join(args.output_dir, args.cls, CHECKPOINT)
    weights = args.backbone_weights
    if args.teacher:
        teacher_out = args.teacher_out or os.path.join(os.path.dirname(os.path.abspath(dst)),
                                                       f"{args.backbone}_torchvision.pdparams")
        weights = os.path.abspath(convert_teacher(args.teacher, teacher_out, args.backbone))
        print(f"teacher: {args.teacher} -> {weights}")
    save_official(torch_load(args.ckpt), dst, args.backbone, weights, source=args.ckpt, image_size=args.image_size)
    print(f"checkpoint: {args.ckpt} -> {dst} (teacher weights: {weights})")
    return dst


if __name__ == "__main__":
    main_guard(main)()
