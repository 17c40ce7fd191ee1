"""``pyro-bnn bench distributed``: SVI steps per second of data-parallel ``meanfield`` on
one process against several, on the same global minibatches.

Each count of processes runs ``torchrun --standalone --nproc_per_node N`` (gloo, one
torch thread per process) of :mod:`benchmarks.distributed.worker` on protein-sized
synthetic data (45,730 rows, 9 features, a 1×100 ReLU network as in the UCI protein
protocol), for each global minibatch size in ``batch_sizes``, split evenly over the
processes (the larger, the more a step is arithmetic rather than per-step overhead).
Steps per second time the optimisation loop alone (``posterior.timings["steps_s"]``,
after the potential's compilation). The counts run in turn, ``repeats`` times, and each
count's median is reported; the scaling is a ratio of two medians of this run.

Example:
    >>> cfg = DistributedConfig.tiny()
    >>> cfg.processes, cfg.rows, cfg.batch_sizes
    ((1, 2), 512, (64,))
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from benchmarks import harness

__all__ = ["DistributedConfig", "format_markdown", "main", "run_scaling"]

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, kw_only=True)
class DistributedConfig(harness.Settings):
    """Protein-sized synthetic regression; ``processes``: the counts compared."""

    rows: int = 45_730
    features: int = 9
    hidden: int = 100
    batch_sizes: tuple[int, ...] = (8192, 32768)
    steps: int = 400
    processes: tuple[int, ...] = (1, 2)
    repeats: int = 3

    @classmethod
    def tiny_settings(cls) -> dict[str, Any]:
        return dict(rows=512, batch_sizes=(64,), steps=20, repeats=1)


def _run(cfg: DistributedConfig, processes: int, batch_size: int, out: Path) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={processes}", "-m", "benchmarks.distributed.worker",
        "--out", str(out), "--rows", str(cfg.rows), "--features", str(cfg.features),
        "--hidden", str(cfg.hidden), "--batch-size", str(batch_size),
        "--steps", str(cfg.steps),
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"torchrun with {processes} processes failed:\n{done.stderr[-2000:]}")
    return json.loads(out.read_text())


def run_scaling(cfg: DistributedConfig, *, progress_bar: bool = True) -> dict[str, Any]:
    """Every (batch size, count)'s runs and its median steps per second."""
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(cfg.repeats):
            for batch in cfg.batch_sizes:
                for processes in cfg.processes:
                    out = Path(tmp) / f"{batch}-{processes}-{repeat}.json"
                    record = _run(cfg, processes, batch, out)
                    record.update(batch_size=batch,
                                  steps_per_s=record["steps"] / record["steps_s"])  # fmt: skip
                    runs.append(record)
                    if progress_bar:
                        print(f"batch {batch}, {processes} process(es): "
                              f"{record['steps_per_s']:.1f} steps/s", file=sys.stderr)  # fmt: skip
    medians = {
        str(batch): {
            str(p): statistics.median(r["steps_per_s"] for r in runs
                                      if r["processes"] == p and r["batch_size"] == batch)
            for p in cfg.processes
        }
        for batch in cfg.batch_sizes
    }  # fmt: skip
    return {
        "settings": cfg.record(),
        "machine": harness.machine(),
        "date": date.today().isoformat(),
        "runs": runs,
        "median_steps_per_s": medians,
    }


def format_markdown(document: dict[str, Any]) -> str:
    """The report: steps per second per count of processes and the speed-up over one."""
    s = document["settings"]
    lines = [
        "# Data-parallel SVI: steps per second",
        "",
        f"Measured {document['date']} on {document['machine']}; `pyro-bnn bench distributed`.",
        f"`meanfield` on {s['rows']:,} × {s['features']} synthetic rows, a 1×{s['hidden']} "
        f"ReLU network, {s['steps']} steps, gloo, one torch thread per process; median of "
        f"{s['repeats']} runs.",
        "",
        *harness.table_header(
            "global batch", "processes", "steps/s", "speed-up over 1", "efficiency"
        ),
    ]
    for batch, by_count in document["median_steps_per_s"].items():
        medians = {int(p): v for p, v in by_count.items()}
        base = medians.get(1)
        for p, value in sorted(medians.items()):
            if base is None:
                speedup = efficiency = "not measured (no 1-process run)"
            else:
                speedup, efficiency = f"{value / base:.2f}×", f"{value / base / p:.0%}"
            lines.append(harness.table_row(f"{int(batch):,}", p, f"{value:.1f}", speedup,
                                           efficiency))  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.command("distributed", __doc__.splitlines()[0])
    parser.add_argument("--processes", default="1,2", help="counts of processes compared")
    parser.add_argument("--steps", type=int, default=None, help="SVI steps per run")

    def run(args: argparse.Namespace) -> int:
        overrides: dict[str, Any] = {"processes": tuple(int(p) for p in
                                                        harness.names(args.processes))}  # fmt: skip
        if args.steps is not None:
            overrides["steps"] = args.steps
        cfg = DistributedConfig.tiny(**overrides) if args.quick else DistributedConfig(**overrides)
        if any(p < 1 for p in cfg.processes) or any(b % p for b in cfg.batch_sizes
                                                     for p in cfg.processes):  # fmt: skip
            raise ValueError(f"--processes must be positive and divide the batches "
                             f"{cfg.batch_sizes}, got {cfg.processes}")  # fmt: skip
        document = run_scaling(cfg, progress_bar=not args.no_progress)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        harness.save(out, document, format_markdown(document))
        print(format_markdown(document))
        return 0

    return harness.main(parser, run, argv)
