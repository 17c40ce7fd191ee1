"""A tiny UCI directory in the Hernández-Lobato & Adams layout, for loader and bench tests."""

from pathlib import Path

import numpy as np


def write_uci(root: Path, *, name: str = "toy", rows: int = 12, splits: int = 1) -> np.ndarray:
    """``root/uci/<name>/`` with two features (one constant) and a target in column 2.

    Split k tests on the last quarter of the rows rolled by k; the rest is training.
    """
    directory = root / "uci" / name
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    x = rng.normal(5, 2, rows)
    table = np.column_stack([x, np.full(rows, 3.0), 100 + 10 * np.sin(x) + rng.normal(0, 1, rows)])
    np.savetxt(directory / "data.txt", table)
    (directory / "index_features.txt").write_text("0\n1\n")
    (directory / "index_target.txt").write_text("2\n")
    (directory / "n_splits.txt").write_text(f"{splits}\n")
    n_test = rows // 4
    for k in range(splits):
        order = np.roll(np.arange(rows), -k * n_test)
        (directory / f"index_train_{k}.txt").write_text("\n".join(map(str, order[:-n_test])) + "\n")
        (directory / f"index_test_{k}.txt").write_text("\n".join(map(str, order[-n_test:])) + "\n")
    return table
