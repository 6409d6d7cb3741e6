"""Markdown results tables: this repository's results JSON files side by side with a paper's numbers.

A method folder keeps its paper numbers in ``paper_results.yaml`` (MVTec AD) and ``paper_results_DATASET.yaml``
(the other datasets its paper or reference code reports)::

    method: RD4AD                       # or a list, e.g. [OrthoAD, PaDiM]
    dataset: mvtec                      # optional, default mvtec: the --dataset the numbers are for
    source: Deng & Li, CVPR 2022, Tables 1-2
    scale: percent                      # or fraction: how the values below are written
    metrics:
      image_auroc:
        protocol: sklearn roc_auc_score, image score = max of the smoothed map
        values: {carpet: 98.9, grid: 100, ...}
        mean: 98.5                      # optional: the paper's own mean

Values are shown in percent. One table per method and dataset. The mean row averages the classes present; the
paper's own mean is used only when every class it covers is present. A format with folds (KolektorSDD) has one row
per class and fold, ``CLASS/foldN`` (the run's ``--fold``), and its paper values are keyed the same way.
"""
import glob
import os

import numpy as np
import yaml

from common.core.errors import UserError
from common.data.readers import dataset_format


def load_paper(path):
    """Read a ``paper_results.yaml``; values are converted to percent."""
    try:
        with open(path, encoding="utf-8") as handle:
            paper = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"cannot read paper numbers {path}: {exc}") from None
    factor = 100.0 if paper.get("scale", "percent") == "fraction" else 1.0
    metrics = {}
    for name, entry in (paper.get("metrics") or {}).items():
        # str: YAML reads MNIST's classes 0..9 as ints, the readers name them "0".."9"
        values = {str(cls): float(v) * factor for cls, v in (entry.get("values") or {}).items() if v is not None}
        mean = entry.get("mean")
        metrics[name] = {"protocol": entry.get("protocol", ""), "values": values,
                         "mean": None if mean is None else float(mean) * factor}
    methods = paper.get("method")
    methods = [methods] if isinstance(methods, str) else list(methods or [])
    return {"methods": [m.lower() for m in methods], "dataset": paper.get("dataset") or "mvtec",
            "source": paper.get("source", ""), "metrics": metrics}


def find_paper(method, repo_root, dataset="mvtec"):
    """The ``paper_results*.yaml`` of the method folder whose ``method`` names ``method`` for ``dataset``, or None."""
    for path in sorted(glob.glob(os.path.join(repo_root, "*-paddle", "paper_results*.yaml"))):
        paper = load_paper(path)
        if method.lower() in paper["methods"] and paper["dataset"] == (dataset or "mvtec"):
            return paper
    return None


def _published_classes(dataset):
    """The rows a dataset publishes: its classes, or ``CLASS/foldN`` for each fold of a format with folds."""
    try:
        fmt = dataset_format(dataset)
    except UserError:
        return ()
    if fmt.folds:
        return tuple(f"{cls}/fold{fold}" for cls in fmt.classes for fold in fmt.folds)
    return tuple(fmt.classes)


def _row_name(record):
    """A record's row: its class, with its fold when the run had one (``kolektor/fold0``)."""
    fold = (record.get("config") or {}).get("fold")
    return record["class"] if fold is None else f"{record['class']}/fold{fold}"


def _class_order(classes, dataset="mvtec"):
    published = _published_classes(dataset)
    known = [c for c in published if c in classes]
    return known + sorted(c for c in classes if c not in published)


def _fmt(value, digits):
    return "–" if value is None else f"{value:.{digits}f}"


NOT_RUN = "not run"


# A metric at several integration limits (MVTec LOCO's au_spro_*@0.01 ... @1.0) is shown at the limit its paper
# tabulates, so a LOCO table has 10 columns rather than 25; --all_metrics shows every one.
TABLE_LIMIT = "0.05"


def table_metrics(records, all_metrics=False):
    """The metric names of ``records`` a table shows, in order of first appearance."""
    names = list(dict.fromkeys(name for r in records for name in r["metrics"]))
    if all_metrics:
        return names
    return [n for n in names if "@" not in n or n.rsplit("@", 1)[1] == TABLE_LIMIT]


def markdown_table(records, paper=None, digits=1, all_classes=False, all_metrics=False):
    """One Markdown table for the records of one method on one dataset: classes x metrics (ours, paper, Δ), mean
    row.

    With ``all_classes`` every published class of the dataset gets a row; a class without a results file shows "not run" (never a
    number from elsewhere) and the mean row of ours is left empty until every class was run.
    """
    if not records:
        raise UserError("no results to tabulate")
    metric_names = table_metrics(records, all_metrics)
    paper_metrics = (paper or {}).get("metrics", {})
    by_class = {_row_name(r): r for r in records}
    dataset = records[0].get("dataset") or "mvtec"
    published = list(_published_classes(dataset)) if all_classes else []
    classes = _class_order(list(dict.fromkeys(list(by_class) + published)), dataset)
    header, rule = ["class"], ["---"]
    for name in metric_names:
        header.append(name)
        if name in paper_metrics:
            header += ["paper", "Δ"]
    rule += ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]

    def cells(ours_by_metric, paper_by_metric):
        row = []
        for name in metric_names:
            ours = ours_by_metric.get(name)
            row.append(NOT_RUN if ours_by_metric is None else _fmt(ours, digits))
            if name in paper_metrics:
                ref = paper_by_metric.get(name)
                row.append(_fmt(ref, digits))
                row.append("–" if ours is None or ref is None else f"{ours - ref:+.{digits}f}")
        return row

    ours_cols = {name: [] for name in metric_names}
    for cls in classes:
        if cls not in by_class:
            ref = {n: m["values"].get(cls) for n, m in paper_metrics.items()}
            lines.append("| " + " | ".join([cls] + _not_run_cells(metric_names, paper_metrics, ref, digits)) + " |")
            for name in metric_names:
                ours_cols[name].append(None)
            continue
        ours = {n: (None if v is None else 100.0 * v) for n, v in by_class[cls]["metrics"].items()}
        for name in metric_names:
            ours_cols[name].append(ours.get(name))
        ref = {n: m["values"].get(cls) for n, m in paper_metrics.items()}
        lines.append("| " + " | ".join([cls] + cells(ours, ref)) + " |")
    mean_ours = {n: (float(np.mean(v)) if v and all(x is not None for x in v) else None)
                 for n, v in ours_cols.items()}
    mean_ref = {}
    for name, entry in paper_metrics.items():
        covered = set(entry["values"])
        if entry["mean"] is not None and (not covered or covered <= set(classes)):
            mean_ref[name] = entry["mean"]
        else:
            vals = [entry["values"][c] for c in classes if c in entry["values"]]
            mean_ref[name] = float(np.mean(vals)) if len(vals) == len(classes) else None
    lines.append("| " + " | ".join([f"**mean ({len(classes)})**"] + cells(mean_ours, mean_ref)) + " |")
    return "\n".join(lines)


def _not_run_cells(metric_names, paper_metrics, paper_by_metric, digits):
    row = []
    for name in metric_names:
        row.append(NOT_RUN)
        if name in paper_metrics:
            row += [_fmt(paper_by_metric.get(name), digits), "–"]
    return row


def protocol_legend(records, paper=None, all_metrics=False):
    """Bullet list: each metric name of the table with its protocol (from the results files and the paper file)."""
    protocols = {}
    for record in records:
        protocols.update(record.get("protocols") or {})
    shown = set(table_metrics(records, all_metrics))
    lines = [f"- `{name}`: {text}" for name, text in protocols.items() if name in shown or name not in
             {n for r in records for n in r["metrics"]}]
    if paper:
        lines.append(f"- paper numbers: {paper['source']}")
    return "\n".join(lines)


def render(records, repo_root, digits=1, all_classes=False, all_metrics=False):
    """One table for every (method, dataset) in ``records``, each with its paper numbers when found."""
    parts = []
    groups = list(dict.fromkeys((r.get("method", "?"), r.get("dataset") or "mvtec") for r in records))
    for method, dataset in groups:
        subset = [r for r in records if r.get("method") == method and (r.get("dataset") or "mvtec") == dataset]
        paper = find_paper(method, repo_root, dataset)
        config = subset[0].get("config") or {}
        described = ", ".join(f"{k} {v}" for k, v in config.items()
                              if v is not None and k in ("backbone", "backbone_weights", "image_size", "scale",
                                                         "epochs", "steps", "k", "seed"))
        parts.append(f"### {method} on {dataset}" + (f" ({described})" if described else ""))
        parts.append(markdown_table(subset, paper, digits, all_classes, all_metrics))
        parts.append(protocol_legend(subset, paper, all_metrics))
    return "\n\n".join(parts) + "\n"
