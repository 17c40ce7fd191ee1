"""Model cards and the README quote their benchmark's committed output, never hand-typed
figures; each committed report is the report of its committed records."""

import shutil
from pathlib import Path

import pytest

from benchmarks.cards import update_card
from benchmarks.uci.bench import default_published_path, load_results
from benchmarks.uci.report import format_report, read_published

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "uci"


def test_uci_card_quotes_the_committed_report(tmp_path):
    card = ROOT / "pyro_bnn" / "zoo" / "uci_mlp.md"
    report = RESULTS / "results.md"
    if not report.exists():
        pytest.skip("no committed UCI benchmark output in benchmarks/uci/")
    regenerated = tmp_path / "card.md"
    shutil.copy(card, regenerated)
    update_card(regenerated, report.read_text(), bench="uci")
    assert regenerated.read_text() == card.read_text(), (
        f"{card} is out of date: rerun `pyro-bnn bench uci ... --card {card}`"
    )


def test_uci_report_is_the_report_of_the_committed_records():
    published = default_published_path(None)
    if not (RESULTS / "results.json").exists() or not published.is_file():
        pytest.skip("needs benchmarks/uci/results.json and the shared published table")
    document = load_results(RESULTS / "results.json")
    expected = format_report(document, read_published(published))
    assert (RESULTS / "results.md").read_text() == expected


def test_dwp_card_quotes_the_committed_report(tmp_path):
    """Once `bench dwp` output is committed, the card must quote it, and the report must be
    the report of the committed records."""
    import json

    from benchmarks.dwp.bench import format_markdown

    results = ROOT / "benchmarks" / "dwp"
    if not (results / "results.json").exists():
        pytest.skip("no committed deep-weight-prior benchmark output in benchmarks/dwp/")
    report = (results / "results.md").read_text()
    assert report == format_markdown(json.loads((results / "results.json").read_text()))
    regenerated = tmp_path / "card.md"
    shutil.copy(ROOT / "pyro_bnn" / "zoo" / "dwp_cnn.md", regenerated)
    update_card(regenerated, report, bench="dwp")
    assert regenerated.read_text() == (ROOT / "pyro_bnn" / "zoo" / "dwp_cnn.md").read_text(), (
        "the dwp card is out of date: rerun `pyro-bnn bench dwp ... --card pyro_bnn/zoo/dwp_cnn.md`"
    )


@pytest.mark.parametrize("bench", ["mnist_bbb", "modes"])
def test_committed_report_is_the_report_of_its_records(bench):
    """The README quotes these reports: each re-renders byte for byte from its records."""
    import importlib
    import json

    results = ROOT / "benchmarks" / bench
    if not (results / "results.json").exists():
        pytest.skip(f"no committed output in benchmarks/{bench}/")
    format_markdown = importlib.import_module(f"benchmarks.{bench}.bench").format_markdown
    document = json.loads((results / "results.json").read_text())
    assert (results / "results.md").read_text() == format_markdown(document)


def _table(markdown: str, title: str) -> dict[str, dict[str, str]]:
    """The rows of the markdown table after ``title``, keyed by their first cell, each a
    {column header: cell} dict (bold headers unbolded)."""
    block = markdown.split(title, 1)[1].splitlines()
    start = next(i for i, line in enumerate(block) if line.startswith("|"))
    stop = next((i for i in range(start, len(block)) if not block[i].startswith("|")),
                len(block))  # fmt: skip
    lines = block[start:stop]
    header = [cell.strip().strip("*") for cell in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header, cells, strict=False))
    return rows


# each README UCI table after its marker: README column -> (report table, report column)
_LL, _RMSE = "### Test log-likelihood (higher is better)", "### Test RMSE (lower is better)"
README_UCI_TABLES = {
    "<!-- laplace uci table": {
        "laplace LL": (_LL, "laplace"), "map LL": (_LL, "map"), "NUTS LL": (_LL, "nuts"),
        "DVI homoscedastic": (_LL, "DVI homoscedastic"), "laplace RMSE": (_RMSE, "laplace"),
        "map RMSE": (_RMSE, "map"),
    },
    "<!-- vi uci table": {
        "dvi": (_LL, "dvi"), "DVI (Wu et al.)": (_LL, "DVI"), "meanfield": (_LL, "meanfield"),
        "MCVI (Wu et al.)": (_LL, "MCVI"), "lowrank": (_LL, "lowrank"),
    },
    "<!-- sgd and dropout uci table": {
        "mcdropout LL": (_LL, "mcdropout"),
        "MC dropout, grid search (Gal 2018)": (_LL, "MC dropout (grid search)"),
        "swag LL": (_LL, "swag"), "multiswag LL": (_LL, "multiswag"),
        "ensemble LL": (_LL, "ensemble"),
    },
}  # fmt: skip


@pytest.mark.parametrize("marker", list(README_UCI_TABLES))
def test_readme_uci_tables_quote_the_report(marker):
    report = (RESULTS / "results.md").read_text()
    readme = (ROOT / "README.md").read_text()
    if marker not in readme:
        pytest.fail(f"the README lost its table marked {marker!r}")
    quoted = _table(readme, marker)
    tables = {title: _table(report, title) for title in (_LL, _RMSE)}
    assert set(quoted) == set(tables[_LL])
    for dataset, row in quoted.items():
        for column, (title, source) in README_UCI_TABLES[marker].items():
            assert row[column] == tables[title][dataset][source], (dataset, column)


@pytest.mark.parametrize(
    ("bench", "module", "name"),
    [
        ("distributed", "benchmarks.distributed", "results"),
        ("speed", "benchmarks.speed.bench", "speed"),
    ],
)
def test_readme_table_quotes_the_committed_report(bench, module, name):
    """The README's scaling and speed tables are the tables of `bench distributed`'s and
    `bench speed`'s committed reports, and each report is the report of its records."""
    import importlib
    import json

    format_markdown = importlib.import_module(module).format_markdown
    results = ROOT / "benchmarks" / bench
    report = (results / f"{name}.md").read_text()
    assert report == format_markdown(json.loads((results / f"{name}.json").read_text()))
    readme = (ROOT / "README.md").read_text()
    marker = f"<!-- {bench} table"
    assert marker in readme, f"the README lost its {bench} table"
    quoted = readme.split(marker, 1)[1].split("\n", 1)[1]
    table = [line for line in report.splitlines() if line.startswith("|")]
    assert quoted.splitlines()[: len(table)] == table
