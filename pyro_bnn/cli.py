"""The ``pyro-bnn`` command: ``demo``, ``bench speed|uci|mnist-bbb|dwp|modes`` and ``zoo list``."""

from __future__ import annotations

import argparse
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


def _names(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [name.strip() for name in text.split(",") if name.strip()]


def _bench_speed(args: argparse.Namespace) -> int:
    from benchmarks.speed.bench import SpeedConfig, format_markdown, run_speed

    options = dict(
        data_dir=args.data_dir, numpyro=not args.no_numpyro, compute_bound=args.compute_bound
    )
    config = SpeedConfig.quick(**options) if args.quick else SpeedConfig(**options)
    results = run_speed(config, out=Path(args.out))
    print(format_markdown(results))
    print(f"written to {args.out}/speed.json and speed.md")
    return 0


def _bench_uci(args: argparse.Namespace) -> int:
    from benchmarks.cards import split_card, update_card
    from benchmarks.uci.bench import parse_splits, run_uci

    out = Path(args.out)
    if args.card:
        split_card(Path(args.card), bench="uci")  # a card without its markers fails before the run
    document = run_uci(
        datasets=_names(args.datasets),
        methods=_names(args.methods),
        splits=parse_splits(args.splits),
        out=out,
        data_dir=args.data_dir,
        published=Path(args.published) if args.published else None,
        jobs=args.jobs,
        progress=not args.no_progress,
    )
    print(f"written to {out}/results.json and results.md")
    if args.card:
        update_card(Path(args.card), (out / "results.md").read_text(), bench="uci")
        print(f"tables written into {args.card}")
    if document["failures"]:
        print(f"{len(document['failures'])} cell(s) failed; rerun to retry them", file=sys.stderr)
        return 1
    return 0


def _bench_mnist_bbb(args: argparse.Namespace) -> int:
    from benchmarks.mnist_bbb.bench import MnistBBBConfig, format_markdown, run_mnist_bbb

    options = {"data_dir": args.data_dir}
    if args.epochs is not None:
        options["epochs"] = args.epochs
    config = MnistBBBConfig.tiny(**options) if args.quick else MnistBBBConfig(**options)
    methods = tuple(_names(args.methods))
    report = run_mnist_bbb(config, out=Path(args.out), methods=methods,
                           progress=not args.no_progress)  # fmt: skip
    print(format_markdown(report))
    print(f"written to {args.out}/results.json, results.md and weights.png")
    return 0


def _bench_dwp(args: argparse.Namespace) -> int:
    from benchmarks.cards import split_card, update_card
    from benchmarks.dwp.bench import DWPBenchConfig, format_markdown, run_dwp_bench

    if args.card:
        split_card(Path(args.card), bench="dwp")  # a card without its markers fails first
    options = {"data_dir": args.data_dir}
    config = DWPBenchConfig.tiny(**options) if args.quick else DWPBenchConfig(**options)
    out = Path(args.out)
    document = run_dwp_bench(config, out=out, stages=tuple(_names(args.stages)),
                             ship=args.ship, progress=not args.no_progress)  # fmt: skip
    print(format_markdown(document))
    print(f"written to {out}/results.json, results.md, dwp_notmnist.pt and the figures")
    if args.card:
        update_card(Path(args.card), (out / "results.md").read_text(), bench="dwp")
        print(f"tables written into {args.card}")
    return 0


def _bench_modes(args: argparse.Namespace) -> int:
    from benchmarks.modes.bench import ModesConfig, format_markdown, run_modes

    config = ModesConfig.tiny() if args.quick else ModesConfig()
    document = run_modes(config, out=Path(args.out), progress=not args.no_progress)
    print(format_markdown(document))
    print(f"written to {args.out}/results.json, results.md and modes.png")
    return 0


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

    bench = commands.add_parser("bench", help="benchmarks")
    benches = bench.add_subparsers(dest="bench_command", required=True)
    speed = benches.add_parser("speed", help="SVI, NUTS and predict speed against references")
    speed.add_argument("--out", default="bench-output/speed", help="output directory")
    speed.add_argument(
        "--data-dir",
        default=None,
        help="folder holding uci/ (default: $PYRO_BNN_DATA or ../shared/data)",
    )
    speed.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    speed.add_argument("--no-numpyro", action="store_true", help="skip the NumPyro reference")
    speed.add_argument(
        "--compute-bound",
        action="store_true",
        help="also run NUTS on protein-sized synthetic data (100 units)",
    )
    speed.set_defaults(run=_bench_speed)

    uci = benches.add_parser(
        "uci", help="UCI regression on the standard splits, beside the published table"
    )
    uci.add_argument(
        "--datasets",
        default="boston,concrete,energy,kin8nm,wine,yacht",
        help="comma-separated dataset folders under <data-dir>/uci/",
    )
    uci.add_argument("--methods", default="nuts,meanfield,lowrank,map")
    uci.add_argument("--splits", default="all", help="e.g. 0-19, 0,3,5-7 or all (default)")
    uci.add_argument("--out", default="bench-output/uci", help="output directory")
    uci.add_argument(
        "--data-dir",
        default=None,
        help="folder holding uci/ (default: $PYRO_BNN_DATA or ../shared/data)",
    )
    uci.add_argument(
        "--published",
        default=None,
        help="published table (default: <data-dir>/../reference/uci_published.csv)",
    )
    uci.add_argument("--jobs", type=int, default=1, help="cells run in parallel processes")
    uci.add_argument("--card", default=None, help="model card whose result section gets the tables")
    uci.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    uci.set_defaults(run=_bench_uci)

    bbb = benches.add_parser(
        "mnist-bbb", help="Bayes by Backprop vs SGD and dropout on MNIST, with SNR pruning"
    )
    bbb.add_argument("--out", default="bench-output/mnist-bbb", help="output directory")
    bbb.add_argument(
        "--data-dir", default=None, help="folder holding mnist/ (default: ../shared/data)"
    )
    bbb.add_argument("--methods", default="sgd,dropout,bbb_gaussian,bbb_mixture")
    bbb.add_argument("--epochs", type=int, default=None, help="epochs per candidate")
    bbb.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    bbb.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    bbb.set_defaults(run=_bench_mnist_bbb)

    dwp = benches.add_parser(
        "dwp", help="deep weight prior vs N(0, 1) and log-uniform on small MNIST training sets"
    )
    dwp.add_argument("--out", default="bench-output/dwp", help="output directory")
    dwp.add_argument(
        "--data-dir",
        default=None,
        help="folder holding mnist/ and notmnist/ (default: ../shared/data)",
    )
    dwp.add_argument("--stages", default="prior,table,init", help="any of prior, table, init")
    dwp.add_argument("--ship", action="store_true", help="also write the package's prior")
    dwp.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    dwp.add_argument("--card", default=None, help="model card whose result section gets the tables")
    dwp.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    dwp.set_defaults(run=_bench_dwp)

    modes = benches.add_parser(
        "modes", help="cyclical vs plain SGLD: modes of a 25-Gaussian mixture visited"
    )
    modes.add_argument("--out", default="bench-output/modes", help="output directory")
    modes.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    modes.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    modes.set_defaults(run=_bench_modes)

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
