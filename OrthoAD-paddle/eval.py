"""Evaluate fitted OrthoAD / PaDiM models: standard metrics and the official OrthoAD protocol, side by side.

    python eval.py --data_path PATH --category all --output_dir output
"""
from common.errors import main_guard
from orthoad.commands import evaluate
from orthoad.options import build_parser, parse_args


@main_guard
def main(argv=None):
    evaluate(parse_args(build_parser(__doc__.splitlines()[0]), argv))


if __name__ == "__main__":
    main()
