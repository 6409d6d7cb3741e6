"""OrthoAD / PaDiM through the repository's common contract.

    python main.py --mode train --cls bottle --data_dir PATH --output_dir output
    python main.py --mode eval  --cls bottle --data_dir PATH --output_dir output
    python main.py --mode predict --cls bottle --input IMAGE_OR_FOLDER --output_dir output
"""
from common.errors import main_guard
from orthoad.commands import evaluate, predict, train
from orthoad.options import build_parser, parse_args

COMMANDS = {"train": train, "eval": evaluate, "predict": predict}


@main_guard
def main(argv=None):
    args = parse_args(build_parser(__doc__.splitlines()[0], modes=tuple(COMMANDS)), argv)
    COMMANDS[args.mode](args)


if __name__ == "__main__":
    main()
