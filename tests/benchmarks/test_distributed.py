"""``pyro-bnn bench distributed`` end to end with tiny settings: two torchrun launches
(1 and 2 gloo processes), the report's rows and its ratio from this run's own runs."""

import json

from benchmarks.distributed import main


def test_the_bench_measures_one_and_two_processes(tmp_path, capsys):
    assert main(["--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    document = json.loads((tmp_path / "results.json").read_text())
    assert sorted(r["processes"] for r in document["runs"]) == [1, 2]
    assert all(r["steps"] == 20 and r["steps_per_s"] > 0 for r in document["runs"])
    report = (tmp_path / "results.md").read_text()
    assert "| 64 | 1 |" in report and "| 64 | 2 |" in report and "1.00×" in report


def test_bad_process_counts_are_refused(tmp_path, capsys):
    assert main(["--quick", "--out", str(tmp_path), "--processes", "0,2"]) == 2
    assert "--processes must be positive" in capsys.readouterr().err
