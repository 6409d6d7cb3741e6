"""Score an image or a folder with a fitted class model: score, calibrated label, heatmap, mask, JSON.

    python predict.py IMAGE_OR_FOLDER --category bottle --output_dir output
"""
from common.errors import main_guard
from orthoad.commands import predict
from orthoad.options import build_parser, parse_args


@main_guard
def main(argv=None):
    parser = build_parser(__doc__.splitlines()[0])
    parser.add_argument("image", nargs="?", default=None, help="image file or folder (same as --input)")
    args = parse_args(parser, argv)
    args.input = args.input or args.image
    predict(args)


if __name__ == "__main__":
    main()
