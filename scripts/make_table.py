#!/usr/bin/env python
"""Print a Markdown table of results JSON files next to the paper's numbers.

    python scripts/make_table.py RESULTS_DIR [--digits 1] [--out FILE.md]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.errors import UserError, main_guard  # noqa: E402
from common.report import render  # noqa: E402
from common.results import atomic_write_text, load_results  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@main_guard
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results_dir", help="folder with METHOD_CLASS.json files (searched recursively)")
    parser.add_argument("--digits", type=int, default=1, help="decimals (values are in percent)")
    parser.add_argument("--out", help="also write the Markdown to this file")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.results_dir):
        raise UserError(f"results folder not found: {args.results_dir}")
    records = load_results(args.results_dir)
    if not records:
        raise UserError(f"no results JSON files in {args.results_dir}")
    text = render(records, REPO_ROOT, args.digits)
    print(text)
    if args.out:
        atomic_write_text(args.out, text)


if __name__ == "__main__":
    main()
