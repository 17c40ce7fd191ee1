"""``bench uci`` end to end with tiny settings: schema, resuming, errors, and the report.

Figures are never asserted here (tiny settings measure nothing); the published
comparisons are checked on hand-made records where the right answer is known.
"""

import json
from dataclasses import replace

import pytest
import torch

from benchmarks.uci.bench import (
    UCIProtocol,
    load_results,
    parse_splits,
    run_uci,
)
from benchmarks.uci.report import format_report, read_published
from pyro_bnn.cli import main
from pyro_bnn.datasets import data_dir, uci
from tests.uci_files import write_uci

RECORD_KEYS = {
    "dataset", "method", "split", "rmse", "test_ll", "wall_s", "prior_scale", "validation_ll",
    "noise_std", "n_train", "n_test", "selection_s", "fit_s", "date", "warnings",
}  # fmt: skip
NUTS_KEYS = {
    "divergences", "max_rhat_test_predictions", "min_ess_test_predictions", "mean_steps_per_draw"
}  # fmt: skip


def test_parse_splits():
    assert parse_splits("0-3") == [0, 1, 2, 3]
    assert parse_splits("5,0-1,1") == [0, 1, 5]
    assert parse_splits("all") == []
    for bad in ("x", "3-a", "-1", ""):
        with pytest.raises(ValueError, match="splits"):
            parse_splits(bad)


def _run(tmp_path, methods, splits, protocol=None, out_name="out", **kwargs):
    return run_uci(
        datasets=["toy"],
        methods=methods,
        splits=splits,
        out=tmp_path / out_name,
        data_dir=str(tmp_path),
        protocol=protocol or UCIProtocol.tiny(),
        progress=False,
        log=lambda _: None,
        **kwargs,
    )


def test_bench_writes_schema_and_resumes(tmp_path, capsys):
    write_uci(tmp_path, rows=40, splits=2)
    document = _run(tmp_path, ["nuts", "meanfield", "map"], [0])
    records = document["records"]
    assert {(r["method"], r["split"]) for r in records} == {
        ("nuts", 0),
        ("meanfield", 0),
        ("map", 0),
    }
    for r in records:
        assert RECORD_KEYS <= r.keys()
        assert (NUTS_KEYS <= r.keys()) == (r["method"] == "nuts")
        assert r["n_train"] == 30 and r["n_test"] == 10
        assert set(r["validation_ll"]) == {"1.0", "2.0"} and r["prior_scale"] in (1.0, 2.0)
        assert str(r["prior_scale"]) == max(r["validation_ll"], key=r["validation_ll"].get)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["records"] == records and saved["protocol"]["hidden"] == 8
    report = (tmp_path / "out" / "results.md").read_text()
    assert "### Test RMSE" in report and "### Test log-likelihood" in report
    assert "| toy |" in report and "NUTS diagnostics" in report

    # a rerun skips what is there; a wider one runs only the new cells
    again = _run(tmp_path, ["nuts", "meanfield", "map"], [0])
    assert again["records"] == records and len(again["runs"]) == 1  # nothing run, nothing logged
    wider = _run(tmp_path, ["meanfield"], [])
    assert len(wider["records"]) == 4 and wider["runs"][-1]["cells"] == 1
    assert wider["records"][:3] == records


def test_sgmcmc_methods_join_the_table(tmp_path):
    """Each SG-MCMC method runs its cells with the step size of its law for the rows it
    fits, records the test-prediction diagnostics, and gets a column in the report."""
    write_uci(tmp_path, rows=40, splits=1)
    methods = ["sgld", "sghmc", "sgnht", "csgld", "csghmc"]
    document = _run(tmp_path, methods, [0])
    assert {r["method"] for r in document["records"]} == set(methods)
    for r in document["records"]:
        assert RECORD_KEYS <= r.keys() and "min_ess_test_predictions" in r
        assert "divergences" not in r and r["step_reductions"] == 0
    report = (tmp_path / "out" / "results.md").read_text()
    assert "| dataset | sgld | sghmc | sgnht | csgld | csghmc |" in report
    law = UCIProtocol.tiny().methods["sgld"]
    assert law.options(validation=False, num_rows=30)["step_size"] == pytest.approx(0.01 / 30)


def test_the_ensemble_joins_with_heteroscedastic_members(tmp_path):
    """Ensemble members carry their own noise heads (no precision site): the record's
    noise is their σ(x) over the test rows. Its schedule is chosen on validation with the
    prior scale; a single candidate means no validation fits."""
    write_uci(tmp_path, rows=40, splits=1)
    document = _run(tmp_path, ["ensemble"], [0])
    (record,) = document["records"]
    assert RECORD_KEYS <= record.keys() and record["prior_scale"] == 1.0
    assert set(record["validation_ll"]) == {"1.0, a", "1.0, b"}
    assert f"1.0, {record['schedule']}" == max(record["validation_ll"],
                                               key=record["validation_ll"].get)  # fmt: skip
    assert record["noise_std"] > 0
    assert "min_ess_test_predictions" not in record  # the members are not a sampler's draws
    assert "| ensemble |" in (tmp_path / "out" / "results.md").read_text()

    tiny = UCIProtocol.tiny()
    ensemble = tiny.methods["ensemble"]
    single = replace(ensemble, schedules={}, fit={**ensemble.fit, "num_steps": 20})
    protocol = replace(tiny, methods={**tiny.methods, "ensemble": single})
    document = _run(tmp_path, ["ensemble"], [0], protocol=protocol, out_name="single")
    assert document["records"][0]["validation_ll"] == {}
    assert "schedule" not in document["records"][0]


def test_dvi_chooses_empirical_bayes_on_validation(tmp_path):
    """dvi's candidates are a fixed prior and empirical Bayes; the record names the choice."""
    write_uci(tmp_path, rows=40, splits=1)
    (record,) = _run(tmp_path, ["dvi"], [0])["records"]
    assert set(record["validation_ll"]) == {"1.0", "1.0, empirical Bayes (layer)"}
    chose_eb = max(record["validation_ll"], key=record["validation_ll"].get) != "1.0"
    assert (record.get("learn_prior") == "layer") == chose_eb
    assert record["noise_std"] > 0 and "| dvi |" in (tmp_path / "out" / "results.md").read_text()


def test_an_extra_candidate_fits_its_own_likelihood(tmp_path, monkeypatch):
    """Validation can choose the model too: an extra candidate is fitted with its own
    likelihood, its label names it, and the record says when it was chosen."""
    import benchmarks.uci.bench as bench

    write_uci(tmp_path, rows=40, splits=1)
    built = []
    real_build = bench.zoo.build

    def build(name, **kwargs):
        built.append(kwargs["likelihood"])
        return real_build(name, **kwargs)

    monkeypatch.setattr(bench.zoo, "build", build)
    tiny = UCIProtocol.tiny()
    extra = (bench.Candidate(1.0, likelihood="heteroscedastic-exp"),)
    methods = {**tiny.methods, "lowrank": replace(tiny.methods["lowrank"], extra_candidates=extra)}
    protocol = replace(tiny, methods=methods)
    (record,) = _run(tmp_path, ["lowrank"], [0], protocol=protocol)["records"]
    assert set(record["validation_ll"]) == {"1.0", "2.0", "1.0, heteroscedastic-exp"}
    assert built[:3] == ["gaussian", "gaussian", "heteroscedastic-exp"]  # validation fits
    chose_extra = max(record["validation_ll"], key=record["validation_ll"].get) == (
        "1.0, heteroscedastic-exp"
    )
    assert (record.get("likelihood") == "heteroscedastic-exp") == chose_extra
    assert built[3] == ("heteroscedastic-exp" if chose_extra else "gaussian")  # the refit


def test_laplace_records_its_evidence_and_tuned_noise(tmp_path):
    write_uci(tmp_path, rows=40, splits=1)
    (record,) = _run(tmp_path, ["laplace"], [0])["records"]
    assert record["validation_ll"] == {}  # one candidate: the evidence tunes the prior
    assert isinstance(record["log_marginal_likelihood"], float) and record["noise_std"] > 0
    assert "| laplace |" in (tmp_path / "out" / "results.md").read_text()


def test_mcdropout_chooses_rate_and_tau_and_swag_runs(tmp_path):
    write_uci(tmp_path, rows=40, splits=1)
    records = _run(tmp_path, ["mcdropout", "swag", "multiswag"], [0])["records"]
    dropout = next(r for r in records if r["method"] == "mcdropout")
    assert set(dropout["validation_ll"]) == {"1.0, a", "1.0, b"}
    assert dropout["schedule"] in ("a", "b")
    assert {r["method"] for r in records} == {"mcdropout", "swag", "multiswag"}


def test_tau_is_given_in_the_original_units_and_grids_are_per_dataset():
    from benchmarks.uci.bench import GAL_TAUS, UCIProtocol

    setting = UCIProtocol().methods["mcdropout"]
    assert len(setting.candidates("boston")) == 12
    boston = setting.schedules_for("boston")
    options = setting.options(validation=False, num_rows=400, schedule="p=0.05, tau=0.1",
                              dataset="boston", y_scale=9.0)  # fmt: skip
    assert options["tau"] == pytest.approx(0.1 * 81) and "p=0.05, tau=0.1" in boston
    assert set(GAL_TAUS) == {"boston", "concrete", "energy", "kin8nm", "wine", "yacht"}


def test_a_diverging_sampler_is_rerun_with_smaller_steps(tmp_path, monkeypatch):
    """A FloatingPointError (the samplers' divergence) reruns the fit with the step divided
    by step_backoff; the record says how many reductions each fit took, and a sampler that
    still diverges after max_step_reductions fails its cell."""
    write_uci(tmp_path, rows=40, splits=1)
    import benchmarks.uci.bench as bench

    steps = []
    real_fit = bench.fit

    def fit_diverging_above(limit):
        def fit(*args, step_size, **kwargs):
            steps.append(step_size)
            if step_size > limit:
                raise FloatingPointError("non-finite gradient")
            return real_fit(*args, step_size=step_size, **kwargs)

        return fit

    law = UCIProtocol.tiny().methods["sgld"]
    first = law.options(validation=False, num_rows=30)["step_size"]  # the 30 training rows
    monkeypatch.setattr(bench, "fit", fit_diverging_above(first / 5))  # needs two reductions
    record = _run(tmp_path, ["sgld"], [0])["records"][0]
    assert record["step_reductions"] == 2
    assert set(record["validation_step_reductions"].values()) == {2}
    assert steps[-3:] == pytest.approx([first, first / 3, first / 9])

    monkeypatch.setattr(bench, "fit", fit_diverging_above(first / 100))  # beyond 3 reductions
    document = _run(tmp_path, ["sgld"], [0], out_name="still")
    assert document["records"] == []
    assert document["failures"][0]["error"] == (
        "FloatingPointError: every candidate diverged on validation: "
        "{'1.0': 'non-finite gradient', '2.0': 'non-finite gradient'}"
    )


def test_a_candidate_that_diverges_is_left_out_of_the_choice(tmp_path, monkeypatch):
    """A validation fit that diverges (wine split 3: a c = √5 prior draw as the start) makes
    its candidate unselectable, not the cell a failure; the record names it and why. When
    every candidate diverges, the cell fails."""
    write_uci(tmp_path, rows=40, splits=1)
    import benchmarks.uci.bench as bench

    real_fit = bench._fit

    def fit_diverging_for(scales):
        def _fit(protocol, cell, x, y, candidate, *, validation, **kwargs):
            if validation and candidate.prior_scale in scales:
                raise FloatingPointError("the meanfield fit diverged at step 1")
            return real_fit(protocol, cell, x, y, candidate, validation=validation, **kwargs)

        return _fit

    monkeypatch.setattr(bench, "_fit", fit_diverging_for({2.0}))
    (record,) = _run(tmp_path, ["meanfield"], [0])["records"]
    assert record["prior_scale"] == 1.0 and set(record["validation_ll"]) == {"1.0"}
    assert record["diverged_candidates"] == {"2.0": "the meanfield fit diverged at step 1"}

    monkeypatch.setattr(bench, "_fit", fit_diverging_for({1.0, 2.0}))
    document = _run(tmp_path, ["meanfield"], [0], out_name="all")
    assert document["records"] == []
    assert document["failures"][0]["error"].startswith(
        "FloatingPointError: every candidate diverged on validation"
    )


def test_results_of_other_settings_are_not_mixed(tmp_path):
    write_uci(tmp_path, rows=40, splits=2)
    _run(tmp_path, ["map"], [0])
    tiny = UCIProtocol.tiny()
    changed = dict(tiny.methods)
    changed["map"] = type(tiny.methods["map"])(fit={**tiny.methods["map"].fit, "lr": 0.5})
    with pytest.raises(ValueError, match=r"map results measured with other settings \(fit\)"):
        _run(tmp_path, ["map"], [1], protocol=type(tiny)(hidden=8, methods=changed))
    assert len(load_results(tmp_path / "out" / "results.json")["records"]) == 1


def test_bench_through_the_command_line(tmp_path, capsys):
    write_uci(tmp_path, rows=40)
    out = tmp_path / "cli"
    args = ["bench", "uci", "--datasets", "toy", "--methods", "map", "--splits", "0"]
    args += ["--out", str(out), "--data-dir", str(tmp_path), "--no-progress"]
    # the command runs the default protocol; keep it cheap by patching the steps
    import benchmarks.uci.bench as bench

    tiny = UCIProtocol.tiny()
    original = bench.UCIProtocol
    bench.UCIProtocol = lambda: tiny  # the command builds the default protocol
    try:
        assert main(args) == 0
    finally:
        bench.UCIProtocol = original
    assert len(json.loads((out / "results.json").read_text())["records"]) == 1
    assert "results.json" in capsys.readouterr().out


def test_bench_errors_name_the_problem(tmp_path):
    write_uci(tmp_path, rows=40)
    with pytest.raises(ValueError, match=r"unknown method.*fullbayes"):
        _run(tmp_path, ["fullbayes"], [0])
    with pytest.raises(ValueError, match=r"toy has 1 splits; split\(s\) \[3\]"):
        _run(tmp_path, ["map"], [3])
    with pytest.raises(FileNotFoundError, match="no UCI dataset directory"):
        run_uci(datasets=["absent"], methods=["map"], splits=[0], out=tmp_path / "o",
                data_dir=str(tmp_path), log=lambda _: None)  # fmt: skip


def test_corrupt_results_file_is_refused_and_left_alone(tmp_path):
    write_uci(tmp_path, rows=40)
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text('{"records": [')
    with pytest.raises(ValueError, match=r"results.json is not valid JSON"):
        _run(tmp_path, ["map"], [0])
    assert (out / "results.json").read_text() == '{"records": ['
    (out / "results.json").write_text("[]")
    with pytest.raises(ValueError, match="no 'records' list"):
        load_results(out / "results.json")


def test_failed_cell_is_reported_not_recorded(tmp_path, monkeypatch):
    write_uci(tmp_path, rows=40)
    import benchmarks.uci.bench as bench

    def broken(*args, **kwargs):
        raise FloatingPointError("the loss became nan")

    monkeypatch.setattr(bench, "run_cell", broken)
    document = _run(tmp_path, ["map"], [0])
    assert document["records"] == []
    assert document["failures"][0]["error"] == "FloatingPointError: the loss became nan"
    assert "1 cell(s) failed" in (tmp_path / "out" / "results.md").read_text()


PUBLISHED = """# comment
dataset,metric,pbp,pbp_se,ensemble,ensemble_sd,mcvi
toy,rmse,2.0,0.1,1.5,0.5,
toy,test_ll,-2.0,0.1,-1.8,0.2,-1.9
"""


def _records(method, metric_values):
    return [
        {"dataset": "toy", "method": method, "split": i, "wall_s": 1.0, **values}
        for i, values in enumerate(metric_values)
    ]


def test_report_compares_against_the_best_published_figure(tmp_path):
    (tmp_path / "published.csv").write_text(PUBLISHED)
    published = read_published(tmp_path / "published.csv")
    assert published.get("ensemble", "rmse", "toy") == (1.5, 0.5)
    assert published.sd_columns == {"ensemble"}
    # NUTS LL -1.7 beats the best (-1.8); RMSE 1.6 ± 0.1 is within one se of 1.5;
    # meanfield LL -1.95 does not reach MCVI's -1.9
    nuts = _records("nuts", [{"rmse": 1.5, "test_ll": -1.6}, {"rmse": 1.7, "test_ll": -1.8}])
    meanfield = _records("meanfield", [{"rmse": 2, "test_ll": -1.9}, {"rmse": 2, "test_ll": -2.0}])
    report = format_report({"records": nuts + meanfield}, published)
    section = report.split("### Against the published figures")[1]
    row = next(line for line in section.splitlines() if line.startswith("| toy |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells == [
        "toy", "-1.70", "-1.80 (Deep ensembles)", "yes",
        "1.600 ± 0.100", "1.500 (Deep ensembles)", "yes",
        "-1.95", "-1.90", "**no**",
    ]  # fmt: skip
    assert "Deep ensembles (± sd)" in report and "1.60 ± 0.10" in report


def test_report_compares_methods_on_their_common_splits():
    """NUTS on splits 0-3, SGLD on 0-1: the common-splits table averages both over 0-1,
    and the SG-MCMC table sums the step reductions of the final fits and puts SGLD's noise
    σ (median and max) beside NUTS's on the same splits."""
    nuts = _records(
        "nuts",
        [{"rmse": 1, "test_ll": v, "noise_std": s}
         for v, s in ((-1.0, 0.1), (-2.0, 0.3), (-9.0, 9.0), (-9.0, 9.0))],
    )  # fmt: skip
    sgld = _records(
        "sgld",
        [{"rmse": 1, "test_ll": v, "step_reductions": k, "noise_std": s}
         for v, k, s in ((-3.0, 0, 1.0), (-4.0, 2, 2e6))],
    )  # fmt: skip
    report = format_report({"records": nuts + sgld}, None)
    section = report.split("### Test log-likelihood on the splits every method ran")[1]
    row = next(line for line in section.splitlines() if line.startswith("| toy |"))
    assert [c.strip() for c in row.strip("|").split("|")] == [
        "toy", "0, 1", "-1.50 ± 0.50", "-3.50 ± 0.50",
    ]  # fmt: skip
    section = report.split("### SG-MCMC diagnostics")[1]
    row = next(line for line in section.splitlines() if line.startswith("| toy |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:4] == ["toy", "sgld", "2", "2"]
    assert cells[-2:] == ["1.00e+06 (2.00e+06)", "0.2"]
    sgld.append({**sgld[0], "split": 2, "test_ll": None, "noise_std": None})  # non-finite
    assert "SG-MCMC" in format_report({"records": nuts + sgld}, None)  # no crash on null
    alone = format_report({"records": nuts}, None)
    assert "every method ran" not in alone and "SG-MCMC" not in alone


def test_published_table_of_the_shared_folder_parses():
    path = data_dir().parent / "reference" / "uci_published.csv"
    if not path.is_file():
        pytest.skip(f"no published table at {path}")
    published = read_published(path)
    assert {"vi", "pbp", "dropout2016", "dropout2018", "ensemble", "mcvi", "dvi"} <= set(
        published.columns
    )
    assert published.get("pbp", "test_ll", "boston") == (-2.57, 0.09)


def test_bench_on_real_boston_split(tmp_path):
    try:
        uci("boston", 0)
    except FileNotFoundError as error:
        pytest.skip(f"UCI data absent: {error}")
    document = run_uci(
        datasets=["boston"], methods=["nuts", "meanfield"], splits=[0], out=tmp_path,
        protocol=UCIProtocol.tiny(), progress=False, log=lambda _: None,
    )  # fmt: skip
    assert {r["method"] for r in document["records"]} == {"nuts", "meanfield"}
    assert all(r["n_train"] == 455 and r["n_test"] == 51 for r in document["records"])
    assert all(
        torch.isfinite(torch.tensor([r["rmse"], r["test_ll"]])).all() for r in document["records"]
    )
    report = (tmp_path / "results.md").read_text()
    assert "MC dropout" in report and "Against the published figures" in report


def test_card_gets_the_tables_between_its_markers(tmp_path, capsys):
    from benchmarks.cards import markers, update_card

    begin, end = markers("uci")
    card = tmp_path / "card.md"
    card.write_text(f"# card\n\nbefore\n{begin}\nold\n{end}\nafter\n")
    update_card(card, "# UCI regression benchmark\n\n### Test RMSE\n\n| a |\n", bench="uci")
    text = card.read_text()
    assert text.startswith("# card\n\nbefore\n") and text.endswith(f"{end}\nafter\n")
    assert "#### Test RMSE" in text and "old" not in text and "UCI regression" not in text

    # a card without markers is refused before anything runs, and left as it was
    card.write_text("# no markers\n")
    write_uci(tmp_path, rows=40)
    args = ["bench", "uci", "--datasets", "toy", "--methods", "map", "--splits", "0"]
    args += ["--out", str(tmp_path / "o"), "--data-dir", str(tmp_path), "--card", str(card)]
    assert main(args) == 2
    assert "needs one line" in capsys.readouterr().err
    assert card.read_text() == "# no markers\n" and not (tmp_path / "o").exists()


def test_a_cell_assembled_from_two_runs_is_the_better_on_validation():
    """A cell of candidates A ∪ B is the run (of A, of B) with the better validation
    log-likelihood, with every label, both runs' costs and diverged candidates; runs of
    other cells or sharing a candidate are refused."""
    from benchmarks.uci.assemble import assemble

    a = {"dataset": "d", "method": "lowrank", "split": 3, "test_ll": -1.0, "wall_s": 10.0,
         "selection_s": 6.0, "validation_ll": {"1.0, gaussian": -0.2},
         "likelihood": "gaussian"}  # fmt: skip
    b = {"dataset": "d", "method": "lowrank", "split": 3, "test_ll": -1.5, "wall_s": 20.0,
         "selection_s": 15.0, "validation_ll": {"1.0": -0.3, "2.0": -0.25},
         "diverged_candidates": {"3.0": "diverged at step 1"}}  # fmt: skip
    record = assemble(a, b, names=("old", "new"))
    assert record["test_ll"] == -1.0 and record["likelihood"] == "gaussian"
    assert record["validation_ll"] == {"1.0, gaussian": -0.2, "1.0": -0.3, "2.0": -0.25}
    assert (record["wall_s"], record["selection_s"]) == (30.0, 21.0)
    assert record["diverged_candidates"] == b["diverged_candidates"]
    assert record["assembled_from"] == ["old", "new"]
    better_b = assemble(a, dict(b, validation_ll={"1.0": -0.1}), names=("old", "new"))
    assert better_b["test_ll"] == -1.5 and "likelihood" not in better_b
    with pytest.raises(ValueError, match="disjoint"):
        assemble(a, dict(b, validation_ll={"1.0, gaussian": 0.0}), names=("old", "new"))
    with pytest.raises(ValueError, match="not the same cell"):
        assemble(a, dict(b, split=4), names=("old", "new"))
