#!/usr/bin/env python
"""Print a Markdown table of results JSON files next to the paper's numbers.

    python scripts/make_table.py RESULTS_DIR [--digits 1] [--out FILE.md] [--all_classes] [--all_metrics] [--update README.md]

``--all_classes`` lists every MVTec AD class ("not run" where no results file exists); ``--update FILE`` replaces
the text between ``<!-- results-table -->`` and ``<!-- /results-table -->`` in FILE (a method README) with the table.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.cli.report import render  # noqa: E402
from common.core.errors import UserError, main_guard  # noqa: E402
from common.core.files import atomic_write_text  # noqa: E402
from common.evaluation.results import load_results  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@main_guard
def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("results_dir", help="folder with METHOD_CLASS.json files (searched recursively)")
    parser.add_argument("--digits", type=int, default=1, help="decimals (values are in percent)")
    parser.add_argument("--out", help="also write the Markdown to this file")
    parser.add_argument("--all_classes", action="store_true", help="a row for every MVTec AD class")
    parser.add_argument("--all_metrics", action="store_true",
                        help="every integration limit of a metric (default: the paper's, e.g. AU-sPRO at 0.05)")
    parser.add_argument("--update", help="replace the marked results block of this Markdown file")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.results_dir):
        raise UserError(f"results folder not found: {args.results_dir}")
    records = load_results(args.results_dir)
    if not records:
        raise UserError(f"no results JSON files in {args.results_dir}")
    text = render(records, REPO_ROOT, args.digits, args.all_classes, args.all_metrics)
    print(text)
    if args.out:
        atomic_write_text(args.out, text)
    if args.update:
        update_block(args.update, text)


def update_block(path, text, start="<!-- results-table -->", end="<!-- /results-table -->"):
    """Replace what stands between the two markers of ``path`` with ``text``."""
    if not os.path.isfile(path):
        raise UserError(f"file not found: {path}")
    with open(path, encoding="utf-8") as handle:
        content = handle.read()
    if start not in content or end not in content:
        raise UserError(f"{path} has no {start} ... {end} block to update")
    head, rest = content.split(start, 1)
    atomic_write_text(path, head + start + "\n" + text.rstrip() + "\n" + end + rest.split(end, 1)[1])


if __name__ == "__main__":
    main()
