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

from convert_torch_weights import convert_file, torch_load  # noqa: E402 - beside this script

from common.core.errors import main_guard  # noqa: E402
from common.networks.backbones import check_arch  # noqa: E402
from rd4ad.checkpoint import CHECKPOINT, save_official  # noqa: E402
from rd4ad.model import BACKBONES  # noqa: E402


def build_parser():
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0],
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
        weights = os.path.abspath(convert_file(args.teacher, teacher_out, args.backbone))
        print(f"teacher: {args.teacher} -> {weights}")
    save_official(torch_load(args.ckpt), dst, args.backbone, weights, source=args.ckpt, image_size=args.image_size)
    print(f"checkpoint: {args.ckpt} -> {dst} (teacher weights: {weights})")
    return dst


if __name__ == "__main__":
    main_guard(main)()
