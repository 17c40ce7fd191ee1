"""The benches' harness: settings, resumable records, reports, and the command line."""

import json
from dataclasses import dataclass

import pytest

from benchmarks import harness


@dataclass(frozen=True, kw_only=True)
class Toy(harness.Settings):
    steps: int = 100
    sizes: tuple[int, ...] = (1, 2)

    @classmethod
    def tiny_settings(cls):
        return {"steps": 2}


def test_settings_tiny_and_record():
    assert Toy.tiny() == Toy(steps=2)
    assert Toy.tiny(sizes=(3,)) == Toy(steps=2, sizes=(3,))
    assert Toy().record() == {"steps": 100, "sizes": [1, 2]}  # as read back from JSON


def test_records_resume_and_refuse_what_is_not_theirs(tmp_path):
    path = tmp_path / "results.json"
    fresh = {"config": Toy().record(), "records": []}
    assert harness.load_records(path, fresh=fresh, bench="toy") is fresh
    harness.save(tmp_path, {**fresh, "records": [1]}, "# report\n")
    assert harness.load_records(path, fresh=fresh, bench="toy")["records"] == [1]
    assert (tmp_path / "results.md").read_text() == "# report\n"
    path.write_text(json.dumps({"records": {}}))
    with pytest.raises(ValueError, match="has no 'records' list; it was not written by bench toy"):
        harness.load_records(path, fresh=fresh, bench="toy")
    path.write_text("[")
    with pytest.raises(ValueError, match="is not valid JSON"):
        harness.load_records(path, fresh=fresh, bench="toy")


def test_same_settings_names_what_changed(tmp_path):
    harness.same_settings({"a": 1, "b": 2}, {"a": 1, "b": 2}, path=tmp_path, what="results")
    with pytest.raises(ValueError, match=r"holds x results measured with other settings \(b, c\)"):
        harness.same_settings({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 0}, path=tmp_path,
                              what="x results")  # fmt: skip


def test_machine_and_tables():
    assert "cores" in harness.machine() and "torch" in harness.machine()
    assert harness.table_header("a", "b", "c")[1] == "|---|---|---|"
    assert harness.table_row("x", 1, "") == "| x | 1 |  |"
    assert harness.names(" a, b,,c ") == ["a", "b", "c"]


def test_command_reports_bad_input_in_one_line(capsys):
    parser = harness.command("toy", "a toy bench", data="toy/")

    def run(args):
        raise ValueError(f"no data in {args.data_dir}")

    assert harness.main(parser, run, ["--data-dir", "nowhere", "--quick"]) == 2
    assert capsys.readouterr().err == "pyro-bnn bench toy: error: no data in nowhere\n"
