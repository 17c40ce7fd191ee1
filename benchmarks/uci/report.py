"""``results.md`` of ``pyro-bnn bench uci``: our methods beside the published table.

Every figure is mean ± standard error over the splits run (the standard error is the
sample standard deviation over splits divided by √n). Published columns come from
``uci_published.csv`` (default ``<data_dir>/../reference/uci_published.csv``); each one
names its source.

Example:
    >>> format_mean_se([1.0, 2.0, 3.0])
    '2.00 ± 0.58'
"""

from __future__ import annotations

import csv
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness import table_header, table_row

__all__ = [
    "PUBLISHED_SOURCES",
    "Published",
    "format_mean_se",
    "format_report",
    "read_published",
    "summarise",
]

# column -> (label, source); a column "<name>_se" or "<name>_sd" holds its spread
PUBLISHED_SOURCES: dict[str, tuple[str, str]] = {
    "vi": ("VI", "Graves 2011, as tabulated in Gal & Ghahramani 2016, Table 1"),
    "pbp": ("PBP", "Hernández-Lobato & Adams 2015, as tabulated in Gal & Ghahramani 2016"),
    "dropout2016": ("MC dropout", "Gal & Ghahramani 2016, Table 1"),
    "dropout2018": (
        "MC dropout (grid search)",
        "Gal's 2018 re-run, github.com/yaringal/DropoutUncertaintyExps",
    ),
    "ensemble": (
        "Deep ensembles",
        "Lakshminarayanan et al. 2017, Table 1; its ± is likely a standard deviation",
    ),
    "mcvi": ("MCVI", "Wu et al. 2019, Table 2; random 90/10 splits, not these index files"),
    "dvi": ("DVI", "Wu et al. 2019, Table 2; random 90/10 splits, not these index files"),
    "dvi_homo": (
        "DVI homoscedastic",
        "Wu et al. 2019, Table 2; random 90/10 splits, not these index files",
    ),
}
METRICS = {
    "rmse": "Test RMSE (lower is better)",
    "test_ll": "Test log-likelihood (higher is better)",
}


@dataclass(frozen=True)
class Published:
    """Published (mean, spread) per column, metric and dataset."""

    columns: list[str]
    sd_columns: set[str]  # columns whose spread is a standard deviation, not an error
    values: dict[tuple[str, str, str], tuple[float, float | None]]  # (column, metric, dataset)

    def get(self, column: str, metric: str, dataset: str) -> tuple[float, float | None] | None:
        return self.values.get((column, metric, dataset))


def read_published(path: Path) -> Published:
    """Parse ``uci_published.csv`` (``#`` comment lines, then dataset, metric, columns)."""
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    rows = list(csv.DictReader(lines))
    if not rows or not {"dataset", "metric"} <= set(rows[0]):
        raise ValueError(f"{path} needs 'dataset' and 'metric' columns")
    spread_suffixes = ("_se", "_sd")
    columns = [
        c for c in rows[0] if c not in ("dataset", "metric") and not c.endswith(spread_suffixes)
    ]
    values = {}
    for row in rows:
        for column in columns:
            if not row.get(column):
                continue
            spread = next((row[column + s] for s in spread_suffixes if row.get(column + s)), None)
            values[(column, row["metric"], row["dataset"])] = (
                float(row[column]),
                None if spread is None else float(spread),
            )
    sd_columns = {c for c in columns if c + "_sd" in rows[0]}
    return Published(columns=columns, sd_columns=sd_columns, values=values)


def format_mean_se(values: Sequence[float], digits: int = 2) -> str:
    mean, se = _mean_se(values)
    return f"{mean:.{digits}f} ± {se:.{digits}f}" if math.isfinite(se) else f"{mean:.{digits}f}"


def _mean_se(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def summarise(records: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, list]]:
    """(dataset, method) -> field -> values over splits, in split order."""
    table: dict[tuple[str, str], dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in sorted(records, key=lambda r: (r["dataset"], r["method"], r["split"])):
        for key, value in r.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                table[(r["dataset"], r["method"])][key].append(value)
    return table


def _digits(metric: str, values: list[float]) -> int:
    scale = max(abs(v) for v in values) if values else 1.0
    return 3 if metric == "rmse" and scale < 0.5 else 2


def _metric_table(
    metric: str, datasets: list[str], methods: list[str], table, published: Published | None
) -> list[str]:
    columns = [c for c in (published.columns if published else []) if _has(published, c, metric)]
    labels = [_label(c) + (" (± sd)" if c in published.sd_columns else "") for c in columns]
    lines = [
        f"### {METRICS[metric]}",
        "",
        *table_header("dataset", *(f"**{m}**" for m in methods), *labels),
    ]
    for dataset in datasets:
        cells = []
        for method in methods:
            values = table.get((dataset, method), {}).get(metric, [])
            cells.append(format_mean_se(values, _digits(metric, values)) if values else "")
        for column in columns:
            entry = published.get(column, metric, dataset)
            if entry is None:
                cells.append("")
            else:
                mean, spread = entry
                digits = _digits(metric, [mean])
                cells.append(
                    f"{mean:.{digits}f}" + ("" if spread is None else f" ± {spread:.{digits}f}")
                )
        lines.append(table_row(dataset, *cells))
    return lines


def _has(published: Published | None, column: str, metric: str) -> bool:
    return published is not None and any(
        key[0] == column and key[1] == metric for key in published.values
    )


def _best_published(published: Published, metric: str, dataset: str) -> tuple[str, float] | None:
    entries = [
        (column, entry[0])
        for column in published.columns
        if (entry := published.get(column, metric, dataset)) is not None
    ]
    if not entries:
        return None
    pick = min if metric == "rmse" else max
    return pick(entries, key=lambda e: e[1])


def _comparisons(datasets: list[str], table, published: Published) -> list[str]:
    """NUTS against the best published figure; meanfield against MCVI."""
    lines = [
        "### Against the published figures",
        "",
        "NUTS test log-likelihood against the best published column; NUTS RMSE against the "
        "best published RMSE plus one NUTS standard error; `meanfield` against MCVI.",
        "",
        *table_header(
            "dataset", "NUTS LL", "best published LL", "beats", "NUTS RMSE",
            "best published RMSE", "within 1 se", "meanfield LL", "MCVI LL", "reaches",
        ),
    ]  # fmt: skip
    for dataset in datasets:
        row = [dataset]
        nuts = table.get((dataset, "nuts"), {})
        best_ll = _best_published(published, "test_ll", dataset)
        best_rmse = _best_published(published, "rmse", dataset)
        if nuts.get("test_ll") and best_ll:
            mean, _ = _mean_se(nuts["test_ll"])
            row += [
                f"{mean:.2f}",
                f"{best_ll[1]:.2f} ({_label(best_ll[0])})",
                _yes(mean > best_ll[1]),
            ]
        else:
            row += ["", "", ""]
        if nuts.get("rmse") and best_rmse:
            mean, se = _mean_se(nuts["rmse"])
            within = mean <= best_rmse[1] + (se if math.isfinite(se) else 0.0)
            row += [
                format_mean_se(nuts["rmse"], 3),
                f"{best_rmse[1]:.3f} ({_label(best_rmse[0])})",
                _yes(within),
            ]
        else:
            row += ["", "", ""]
        meanfield = table.get((dataset, "meanfield"), {})
        mcvi = published.get("mcvi", "test_ll", dataset)
        if meanfield.get("test_ll") and mcvi:
            mean, _ = _mean_se(meanfield["test_ll"])
            row += [f"{mean:.2f}", f"{mcvi[0]:.2f}", _yes(mean >= mcvi[0])]
        else:
            row += ["", "", ""]
        lines.append(table_row(*row))
    return lines


@dataclass(frozen=True)
class Comparison:
    """One of our methods against one published column, by test log-likelihood."""

    method: str
    column: str
    title: str
    note: str


COMPARISONS = (
    Comparison(
        "ensemble", "ensemble", "Deep ensembles against the published figures",
        "Test log-likelihood of `ensemble` (5 heteroscedastic members, adversarial training) "
        "against Lakshminarayanan et al. 2017, Table 1 (20 splits; ours: the splits run).",
    ),
    Comparison(
        "dvi", "dvi", "Deterministic VI against Wu et al. 2019",
        "Test log-likelihood of `dvi` (heteroscedastic, log-variance head; empirical Bayes or "
        "a fixed prior chosen on validation) against the DVI column of Wu et al. 2019, "
        "Table 2. Their splits are 20 random 90/10 draws, not the index files used here, "
        "so the comparison is of protocols, not of identical test sets.",
    ),
    Comparison(
        "mcdropout", "dropout2018", "MC dropout against Gal's 2018 grid-search re-run",
        "Test log-likelihood of `mcdropout` (Gal's grids of p and τ, chosen on validation; "
        "its schedule compressed, see the hyperparameter table) against the grid-search "
        "column of yaringal/DropoutUncertaintyExps (20 splits; ours: the splits run).",
    ),
    Comparison(
        "meanfield", "mcvi", "Mean-field VI against Wu et al.'s Monte Carlo VI",
        "Test log-likelihood of `meanfield` against the MCVI column of Wu et al. 2019, "
        "Table 2 (random 90/10 splits, not the index files used here).",
    ),
)  # fmt: skip


def _published_comparison(
    comparison: Comparison, datasets: list[str], table, published: Published
) -> list[str]:
    """``comparison.method`` against a published column: at or above its mean, and within
    one published standard error where the column has one."""
    lines = [f"### {comparison.title}", "", comparison.note, ""]
    header = ["dataset", "splits", f"{comparison.method} LL", "published LL", "at or above"]
    rows, reached, within, with_se = [], 0, 0, 0
    for dataset in datasets:
        ours = table.get((dataset, comparison.method), {}).get("test_ll")
        theirs = published.get(comparison.column, "test_ll", dataset)
        if not ours or theirs is None:
            continue
        mean, _ = _mean_se(ours)
        published_mean, published_se = theirs
        reached += mean >= published_mean
        row = [dataset, len(ours), format_mean_se(ours), f"{published_mean:.2f}",
               _yes(mean >= published_mean)]  # fmt: skip
        if published_se is not None and comparison.column != "ensemble":  # ensemble's is an sd
            with_se += 1
            close = mean >= published_mean - published_se
            within += close
            row[3] = f"{published_mean:.2f} ± {published_se:.2f}"
            row.append(_yes(close))
        rows.append(row)
    if not rows:
        return []
    if with_se:
        header.append("within one published se")
    lines += [*table_header(*header), *(table_row(*r, *[""] * (len(header) - len(r)))
                                        for r in rows)]  # fmt: skip
    lines += ["", f"At or above the published figure on {reached} of {len(rows)} datasets."]
    if with_se:
        lines[-1] += f" Within one published standard error on {within} of {with_se}."
    return lines


def _label(column: str) -> str:
    return PUBLISHED_SOURCES.get(column, (column, ""))[0]


def _yes(flag: bool) -> str:
    return "yes" if flag else "**no**"


def _cost_table(datasets: list[str], methods: list[str], table) -> list[str]:
    lines = [
        "### Wall time per split (seconds, validation selection included)",
        "",
        *table_header("dataset", *methods),
    ]
    totals = dict.fromkeys(methods, 0.0)
    for dataset in datasets:
        cells = []
        for method in methods:
            values = table.get((dataset, method), {}).get("wall_s", [])
            totals[method] += sum(values)
            cells.append(f"{sum(values) / len(values):.0f}" if values else "")
        lines.append(table_row(dataset, *cells))
    lines.append(
        table_row("**total, hours of one process**", *(f"{totals[m] / 3600:.2f}" for m in methods))
    )
    return lines


def _nuts_table(datasets: list[str], table) -> list[str]:
    lines = [
        "### NUTS diagnostics (test predictions f(x), over splits)",
        "",
        *table_header(
            "dataset", "splits", "divergences (total)", "max R-hat", "min ESS (worst split)",
            "median of per-split min ESS", "leapfrog steps per draw",
        ),
    ]  # fmt: skip
    for dataset in datasets:
        nuts = table.get((dataset, "nuts"))
        if not nuts or "divergences" not in nuts:
            continue
        ess = sorted(nuts.get("min_ess_test_predictions", []))
        rhat = nuts.get("max_rhat_test_predictions", [])
        steps = nuts["mean_steps_per_draw"]
        lines.append(table_row(
            dataset, len(nuts["divergences"]), f"{sum(nuts['divergences']):.0f}",
            f"{max(rhat):.3f}" if rhat else "—", f"{ess[0]:.0f}" if ess else "—",
            f"{ess[len(ess) // 2]:.0f}" if ess else "—", f"{sum(steps) / len(steps):.0f}",
        ))  # fmt: skip
    return lines


def _common_splits_table(
    datasets: list[str],
    methods: list[str],
    records: list[dict[str, Any]],
    splits: dict[tuple[str, str], set[int]],
) -> list[str]:
    """Test log-likelihood of every method over the splits all of them ran, so that
    methods run on fewer splits (the SG-MCMC samplers) are compared on the same data."""
    lines = [
        "### Test log-likelihood on the splits every method ran",
        "",
        *table_header("dataset", "splits", *methods),
    ]
    for dataset in datasets:
        ran = [splits[(dataset, m)] for m in methods if splits.get((dataset, m))]
        common = set.intersection(*ran)
        if not common:
            continue
        cells = []
        for method in methods:
            rows = [r for r in _cell_records(records, dataset, method) if r["split"] in common]
            values = _present(rows, "test_ll")
            cells.append(format_mean_se(values) if values else "")
        lines.append(table_row(dataset, _split_list(sorted(common)), *cells))
    return lines


def _split_list(splits: list[int]) -> str:
    if splits == list(range(splits[0], splits[-1] + 1)) and len(splits) > 2:
        return f"{splits[0]}–{splits[-1]}"
    return ", ".join(map(str, splits))


def _sgmcmc_table(
    datasets: list[str], methods: list[str], records: list[dict[str, Any]]
) -> list[str]:
    """Per dataset and SG-MCMC method: the step reductions of the final fits, the mixing
    of the test predictions, and the learned noise σ (the posterior mean of σ, in y's
    units) beside NUTS's on the same splits: a sampler that has not reached the
    posterior's low-noise region shows a σ far above NUTS's."""
    lines = [
        "### SG-MCMC diagnostics (test predictions f(x), one chain, over splits)",
        "",
        *table_header(
            "dataset", "method", "splits", "step reductions (final fits)", "max R-hat",
            "median of per-split min ESS", "noise σ: median (max)",
            "NUTS noise σ, same splits: median",
        ),
    ]  # fmt: skip
    for dataset in datasets:
        for method in methods:
            rows = [r for r in _cell_records(records, dataset, method) if "step_reductions" in r]
            if not rows:
                continue
            ess = sorted(_present(rows, "min_ess_test_predictions"))
            rhat = _present(rows, "max_rhat_test_predictions")
            sigma = sorted(_present(rows, "noise_std"))
            splits = {r["split"] for r in rows}
            nuts = _present(
                [r for r in _cell_records(records, dataset, "nuts") if r["split"] in splits],
                "noise_std",
            )
            lines.append(table_row(
                dataset, method, len(rows), sum(r["step_reductions"] for r in rows),
                f"{max(rhat):.2f}" if rhat else "—",
                f"{ess[len(ess) // 2]:.0f}" if ess else "—", _median_and_max(sigma),
                _general(statistics.median(nuts)) if nuts else "—",
            ))  # fmt: skip
    return lines


def _cell_records(records: list[dict[str, Any]], dataset: str, method: str) -> list[dict]:
    """The records of one (dataset, method), in split order."""
    rows = [r for r in records if (r["dataset"], r["method"]) == (dataset, method)]
    return sorted(rows, key=lambda r: r["split"])


def _present(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [r[key] for r in rows if r.get(key) is not None]


def _median_and_max(values: list[float]) -> str:
    if not values:
        return "—"
    return f"{_general(statistics.median(values))} ({_general(max(values))})"


def _general(value: float) -> str:
    """Three significant figures, in scientific notation only when large."""
    return f"{value:.3g}" if value < 1e4 else f"{value:.2e}"


def format_report(document: dict[str, Any], published: Published | None) -> str:
    """The markdown report of a ``results.json`` document."""
    records = document["records"]
    datasets = sorted({r["dataset"] for r in records})
    order = ["nuts", "meanfield", "lowrank", "dvi", "map", "sgld", "sghmc", "sgnht", "csgld",
             "csghmc"]  # fmt: skip
    present = {r["method"] for r in records}
    methods = [m for m in order if m in present] + sorted(present - set(order))
    table = summarise(records)
    splits = defaultdict(set)
    for r in records:
        splits[(r["dataset"], r["method"])].add(r["split"])
    dates = sorted({r["date"] for r in records if "date" in r})
    lines = [
        "# UCI regression benchmark",
        "",
        f"Machine: {document.get('machine', 'unknown')}. Measured "
        + (f"{dates[0]} to {dates[-1]}" if len(dates) > 1 else (dates[0] if dates else "—"))
        + ". Mean ± standard error over splits; splits run per cell:",
        "",
        *table_header("dataset", *methods),
    ]
    for dataset in datasets:
        lines.append(table_row(dataset, *(len(splits.get((dataset, m), ())) for m in methods)))
    for metric in METRICS:
        lines += ["", *_metric_table(metric, datasets, methods, table, published)]
    if published is not None:
        lines += ["", *_comparisons(datasets, table, published)]
        for comparison in COMPARISONS:
            if comparison.method in methods:
                compared = _published_comparison(comparison, datasets, table, published)
                lines += ["", *compared] if compared else []
    lines += ["", *_cost_table(datasets, methods, table)]
    runs = document.get("runs", [])
    cells = sum(run["cells"] for run in runs)
    if runs:
        elapsed = sum(run["elapsed_s"] for run in runs)
        jobs = "/".join(str(j) for j in sorted({run["jobs"] for run in runs}))
        lines.append(
            f"\nElapsed time of the recorded runs: {elapsed / 3600:.2f} h for {cells} cells "
            f"in {len(runs)} run(s) at --jobs {jobs}."
        )
    if cells < len(records):
        lines.append(
            f"\n{len(records) - cells} cells came from runs stopped "
            "before they could record their elapsed time; their per-cell wall times above "
            "are complete."
        )
    nuts = _nuts_table(datasets, table)
    if len(nuts) > 4:
        lines += ["", *nuts]
    sgmcmc = _sgmcmc_table(datasets, methods, records)
    if len(sgmcmc) > 4:
        lines += ["", *sgmcmc]
    if any(len({frozenset(splits[(d, m)]) for m in methods if (d, m) in splits}) > 1
           for d in datasets):  # fmt: skip
        lines += ["", *_common_splits_table(datasets, methods, records, splits)]
    if published is not None:
        used = [c for c in published.columns]
        lines += ["", "Published columns:", ""]
        lines += [
            f"- **{_label(c)}**: {PUBLISHED_SOURCES.get(c, (c, 'uci_published.csv'))[1]}"
            for c in used
        ]
    failures = document.get("failures") or []
    if failures:
        lines += ["", f"**{len(failures)} cell(s) failed in the last run** (retried on rerun):", ""]
        lines += [
            f"- {f['dataset']} {f['method']} split {f['split']}: {f['error']}" for f in failures
        ]
    return "\n".join(lines) + "\n"
