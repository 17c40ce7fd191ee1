"""Cells assembled from two runs of disjoint candidate sets.

A cell's candidate fits are independent: each is seeded by the split alone, on the same
validation carve. So a cell of candidates A ∪ B is the better (on validation) of a run of
A and a run of B, with the winning run's final fit. ``python -m benchmarks.uci.assemble``
makes such records when a method gains candidates, instead of refitting the old ones.
Each record names its runs (``assembled_from``); its ``wall_s`` and ``selection_s`` add
up both cells (two final fits where one cell would make one).

Example:
    >>> a = {"dataset": "d", "method": "m", "split": 0, "test_ll": -1.0, "wall_s": 1.0,
    ...      "selection_s": 0.5, "validation_ll": {"1.0": -0.4}}
    >>> b = dict(a, test_ll=-2.0, validation_ll={"2.0": -0.3})
    >>> assemble(a, b, names=("A", "B"))["test_ll"]
    -2.0
"""

from __future__ import annotations

import argparse
import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.cards import update_card
from benchmarks.uci.bench import UCIProtocol, default_published_path, load_results
from benchmarks.uci.report import format_report, read_published

__all__ = ["assemble", "main"]


def assemble(
    first: dict[str, Any], second: dict[str, Any], *, names: tuple[str, str]
) -> dict[str, Any]:
    """The record of a cell whose candidates are ``first``'s and ``second``'s (same
    dataset, method and split; labels disjoint): the run whose best validation
    log-likelihood is higher gives the test figures."""
    key = ("dataset", "method", "split")
    if any(first[k] != second[k] for k in key):
        raise ValueError(f"not the same cell: {[first[k] for k in key]} and "
                         f"{[second[k] for k in key]}")  # fmt: skip
    shared = set(first["validation_ll"]) & set(second["validation_ll"])
    if shared:
        raise ValueError(f"the runs share candidates {sorted(shared)}; they must be disjoint")
    best = max(
        (first, second),
        key=lambda r: max(r["validation_ll"].values(), default=float("-inf")),
    )
    record = dict(best)
    record["validation_ll"] = {**first["validation_ll"], **second["validation_ll"]}
    diverged = {**first.get("diverged_candidates", {}), **second.get("diverged_candidates", {})}
    if diverged:
        record["diverged_candidates"] = diverged
    for cost in ("wall_s", "selection_s"):
        record[cost] = first[cost] + second[cost]
    record["assembled_from"] = list(names)
    return record


def _relabel(record: dict[str, Any], suffix: str) -> dict[str, Any]:
    """``record`` with ``suffix`` added to its candidate labels, and ``likelihood`` set
    (a run of extra candidates made before they named their likelihood)."""
    relabel = {f"{label}, {suffix}": ll for label, ll in record["validation_ll"].items()}
    return dict(record, validation_ll=relabel, likelihood=suffix)


def main(argv: Sequence[str] | None = None) -> int:
    """Replace ``--method``'s records in ``--out``/results.json by cells assembled from
    ``--new`` (a results.json) and that method's records at git ``--old-commit``, labelled
    ``--old-likelihood``; rewrite the report and, with ``--card``, the card."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", required=True)
    parser.add_argument("--new", required=True, type=Path)
    parser.add_argument("--old-commit", required=True)
    parser.add_argument("--old-likelihood", required=True)
    parser.add_argument("--out", default=Path("benchmarks/uci"), type=Path)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--card", default=None, type=Path)
    args = parser.parse_args(argv)

    shown = f"{args.old_commit}:{args.out / 'results.json'}"
    old_records = json.loads(subprocess.check_output(["git", "show", shown]))["records"]
    old = {(r["dataset"], r["split"]): r for r in old_records if r["method"] == args.method}
    new = [r for r in load_results(args.new)["records"] if r["method"] == args.method]
    missing = [(r["dataset"], r["split"]) for r in new if (r["dataset"], r["split"]) not in old]
    if missing:
        raise SystemExit(f"no {args.method} record at {args.old_commit} for {missing}")
    assembled = [
        assemble(
            _relabel(old[(r["dataset"], r["split"])], args.old_likelihood),
            r,
            names=(f"run at commit {args.old_commit}", f"{r['date']} run"),
        )
        for r in new
    ]
    document = load_results(args.out / "results.json")
    kept = [r for r in document["records"] if r["method"] != args.method]
    document["records"] = kept + sorted(assembled, key=lambda r: (r["dataset"], r["split"]))
    document["protocol"]["methods"][args.method] = UCIProtocol().describe()["methods"][args.method]
    published = default_published_path(args.data_dir)
    reference = read_published(published) if published.is_file() else None
    harness.save(args.out, document, format_report(document, reference))
    if args.card:
        update_card(args.card, (args.out / "results.md").read_text(), bench="uci")
    won = sum(r.get("likelihood") == args.old_likelihood for r in assembled)
    print(f"{len(assembled)} {args.method} cells assembled; the old run's candidates won {won}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
