"""Convert an official KDAD/MKD cloner checkpoint (PyTorch) so that KDAD-paddle can evaluate, predict and export it.

    python scripts/convert_kdad_checkpoint.py --ckpt Cloner_bottle_epoch_601.pth --cls bottle \
        --output_dir KDAD-paddle/output [--expert vgg16-397923af.pth]
    cd KDAD-paddle && python main.py --mode eval --cls bottle --output_dir output --data_dir DATA

``--ckpt`` is the cloner ``state_dict()`` the official ``train()`` saves (keys ``features.<index>.*``); it is
written to ``OUTPUT_DIR/CLASS/kdad.pdparams``. ``--expert`` is torchvision's VGG16 ImageNet state dict (the official
expert); it is converted once to ``--expert_out`` and the checkpoint points to it. Without ``--expert`` the
checkpoint uses ``--backbone_weights`` (default paddle.vision's ImageNet VGG16). A converted model has no
calibrated threshold: pass ``--threshold`` to predict/infer.
"""
import argparse
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, os.path.join(REPO_ROOT, "KDAD-paddle"))

from convert_torch_weights import convert_file, torch_load  # noqa: E402 - beside this script

from common.core.errors import main_guard  # noqa: E402
from kdad.checkpoint import CHECKPOINT, save_official  # noqa: E402


def build_parser():
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="official cloner state dict .pth (keys features.N.*)")
    parser.add_argument("--cls", required=True, help="class the checkpoint was trained on")
    parser.add_argument("--output_dir", default=os.path.join("KDAD-paddle", "output"),
                        help="writes OUTPUT_DIR/CLASS/" + CHECKPOINT)
    parser.add_argument("--expert", default=None, help="torchvision vgg16 ImageNet .pth (the official expert)")
    parser.add_argument("--expert_out", default=None,
                        help="where to write the converted expert (default OUTPUT_DIR/vgg16_torchvision.pdparams)")
    parser.add_argument("--backbone_weights", default="imagenet",
                        help="expert weights recorded when --expert is not given: imagenet | FILE.pdparams")
    parser.add_argument("--cloner_config", choices=("A", "B"), default="B")
    parser.add_argument("--image_size", type=int, default=128)
    return parser


def run(argv=None):

    args = build_parser().parse_args(argv)
    official = torch_load(args.ckpt)
    if isinstance(official.get("state_dict"), dict):
        official = official["state_dict"]
    weights = args.backbone_weights
    if args.expert:
        weights = os.path.abspath(args.expert_out or os.path.join(args.output_dir, "vgg16_torchvision.pdparams"))
        convert_file(args.expert, weights, "vgg16")
        print(f"expert: {args.expert} -> {weights}")
    out = os.path.join(args.output_dir, args.cls, CHECKPOINT)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    save_official(official, out, backbone_weights=weights, source=args.ckpt, cloner_config=args.cloner_config,
                  image_size=args.image_size)
    print(f"cloner: {args.ckpt} -> {out}")
    return out


if __name__ == "__main__":
    main_guard(run)()
