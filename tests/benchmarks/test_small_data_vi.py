from benchmarks.small_data_vi.bench import VARIANTS, main, run_small_data_vi


def test_small_data_vi_bench_smoke(tmp_path):
    document = run_small_data_vi(out=tmp_path, quick=True)
    assert [r["variant"] for r in document["records"]] == [v.name for v in VARIANTS[:2]]
    for record in document["records"]:
        assert record["noise_sd"] > 0 and 0 <= record["coverage_95"] <= 1
    report = (tmp_path / "results.md").read_text()
    assert "| meanfield, empirical Bayes |" in report and document["date"] in report


def test_small_data_vi_bench_command_line(tmp_path, capsys):
    assert main(["--quick", "--out", str(tmp_path / "out")]) == 0
    assert "| variant |" in capsys.readouterr().out
