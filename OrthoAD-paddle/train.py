"""Fit OrthoAD / PaDiM Gaussians per class (optionally evaluate).

    python train.py --data_path PATH --category all --method ortho --arch wide_resnet50_2 --k 300 --eval --eval_PRO
"""
from common.errors import main_guard
from orthoad.commands import train
from orthoad.options import build_parser, parse_args


@main_guard
def main(argv=None):
    train(parse_args(build_parser(__doc__.splitlines()[0]), argv))


if __name__ == "__main__":
    main()
