from pyro_bnn.cli import main


def test_demo_quick_writes_table_figures_and_netcdf(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("|")]
    assert lines[0].startswith("| method | wall s | test RMSE | test log-lik | 95% coverage")
    assert [line.split("|")[1].strip() for line in lines[1:]] == [
        "---",
        "map",
        "meanfield",
        "lowrank",
        "nuts",
    ]
    for method in ("map", "meanfield", "lowrank", "nuts"):
        assert (tmp_path / f"predictive_{method}.png").stat().st_size > 0
        assert (tmp_path / f"{method}.nc").stat().st_size > 0
        assert (tmp_path / f"summary_{method}.csv").read_text().startswith(",mean")
    assert (tmp_path / "table.md").read_text().strip() == "\n".join(lines)
