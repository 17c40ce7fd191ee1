"""Atomic writes: an interrupted write leaves the old file and no temporary behind."""

import pytest

from pyro_bnn.files import atomic_open, read_json, write_json


def test_a_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "results.json"
    write_json(path, {"records": [1]})
    with pytest.raises(RuntimeError, match="interrupted"), atomic_open(path) as f:
        f.write('{"records": [')
        raise RuntimeError("interrupted")
    assert read_json(path) == {"records": [1]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_read_json_names_a_damaged_file(tmp_path):
    assert read_json(tmp_path / "absent.json") is None
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match=r"bad.json is not valid JSON"):
        read_json(tmp_path / "bad.json")
