from pyro_bnn.cli import main
from pyro_bnn.demo import demo_settings


def test_demo_quick_writes_table_figures_and_netcdf(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("|")]
    assert lines[0].startswith("| method | wall s | test RMSE | test log-lik | 95% coverage")
    methods = list(demo_settings(quick=True))
    assert [line.split("|")[1].strip() for line in lines[1:]] == ["---", *methods]
    for method in methods:
        assert (tmp_path / f"predictive_{method}.png").stat().st_size > 0
        assert (tmp_path / f"{method}.nc").stat().st_size > 0
        assert (tmp_path / f"summary_{method}.csv").read_text().startswith(",mean")
    assert (tmp_path / "table.md").read_text().strip() == "\n".join(lines)


def test_readme_demo_table_is_the_demos_and_dated_beside_its_command():
    """The README's demo table has the demo's header and methods, in order, and says when
    and with which command it was measured (its numbers are one run's, not regenerated)."""
    import re
    from pathlib import Path

    from pyro_bnn.demo import demo_settings, format_table

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## The demo", 1)[1].split("\n## ", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("|")]
    assert table[:2] == format_table([]).splitlines()
    assert [row.split("|")[1].strip() for row in table[2:]] == list(demo_settings(quick=False))
    measured = re.search(r"Measured with `([^`]*)`(.*?)\n\n", section, flags=re.S)
    assert measured and measured.group(1).endswith("pyro-bnn demo")
    assert re.search(r"on \d{4}-\d{2}-\d{2}", measured.group(2))
