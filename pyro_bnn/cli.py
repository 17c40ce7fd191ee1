"""The ``pyro-bnn`` command: ``demo``, ``zoo list``, and ``bench <name> …``, the front door
of the benchmarks, which live beside their records in a checkout of the repository
(``benchmarks/<name>``), not in the library."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from pyro_bnn.demo import format_table, run_demo

    rows = run_demo(
        out=Path(args.out), quick=args.quick, seed=args.seed, progress_bar=not args.no_progress
    )
    print(format_table(rows))
    print(f"\nfigures, netCDF and ArviZ summaries written to {args.out}/")
    return 0


def _zoo_list(args: argparse.Namespace) -> int:
    from pyro_bnn import zoo

    for entry in zoo.entries():
        print(f"{entry.name:28s} {entry.summary}")
    return 0


def find_checkout(start: Path) -> Path | None:
    """The pyro-bnn checkout holding ``start``: the first of ``start`` and its parents
    with a ``benchmarks/__init__.py`` beside the harness (``tests/benchmarks`` is not it)."""
    for folder in (start, *start.parents):
        if all((folder / "benchmarks" / f).is_file() for f in ("__init__.py", "harness.py")):
            return folder
    return None


def _benches(root: Path) -> list[str]:
    """The benches of the checkout at ``root``, by command name (``mnist_bbb`` -> ``mnist-bbb``)."""
    folders = (root / "benchmarks").iterdir()
    return sorted(f.name.replace("_", "-") for f in folders if (f / "bench.py").is_file())


def _bench(args: argparse.Namespace) -> int:
    """Run ``benchmarks.<name>`` of the checkout holding the current directory: the benches
    are experiments kept beside their records in the repository, not part of the library."""
    root = find_checkout(Path.cwd())
    if root is None:
        raise ValueError(
            "benches run from a checkout of pyro-bnn, and none holds the current directory "
            f"({Path.cwd()}: no benchmarks/__init__.py here or above); clone the repository "
            "and run `pyro-bnn bench ...` (or `python -m benchmarks.<name> ...`) inside it"
        )
    if args.name not in _benches(root):
        raise ValueError(f"unknown bench {args.name!r}; {root} has {', '.join(_benches(root))}")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    module = importlib.import_module(f"benchmarks.{args.name.replace('-', '_')}")
    if not Path(module.__file__).resolve().is_relative_to(root.resolve()):
        raise ValueError(f"benchmarks.{args.name} was imported from {module.__file__}, not {root}")
    return module.main(args.args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyro-bnn", description="Bayesian neural networks on Pyro"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo", help="fit map, meanfield, lowrank and nuts on a 1-D gap dataset"
    )
    demo.add_argument(
        "--out", default="demo-output", help="output directory (default: demo-output)"
    )
    demo.add_argument("--quick", action="store_true", help="small settings, under 30 s")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    demo.set_defaults(run=_demo)

    bench = commands.add_parser(
        "bench",
        help="run a benchmark of a pyro-bnn checkout (benchmarks/<name>)",
        description="Run benchmarks/<name> of the pyro-bnn checkout holding the current "
        "directory; `pyro-bnn bench <name> --help` lists its options.",
    )
    bench.add_argument("name", help="speed, uci, mnist-bbb, dwp, modes or small-data-vi")
    bench.add_argument("args", nargs=argparse.REMAINDER, help="the bench's options")
    bench.set_defaults(run=_bench)

    zoo = commands.add_parser("zoo", help="the model zoo")
    zoo_commands = zoo.add_subparsers(dest="zoo_command", required=True)
    zoo_commands.add_parser("list", help="list the zoo's models").set_defaults(run=_zoo_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as error:  # bad input: say what, no traceback
        print(f"pyro-bnn: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
