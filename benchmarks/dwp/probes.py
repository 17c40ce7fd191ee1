"""Single-cell probes of the dwp bench's departures from Atanov et al. (issue 22).

``python -m benchmarks.dwp.probes fit PRIOR_FILE --name N [--prior P] [--size S]
[--draw D] [--set key=value ...]`` fits one (prior, size, draw) cell with the bench's own
code path (config overrides as Python literals). It records what the table does not:
training accuracy, and q's median |mean|, median scale and median kernel norm per conv
layer.

``python -m benchmarks.dwp.probes kl-only PRIOR_FILE --name N`` is the issue's KL-only
probe. q starts at the decoder's mean for a latent draw (log-variance −10), and only the
KL term (no data) is optimised, with Adam 5e-3 for 200 steps. It records the median
kernel norm per layer before and after.

Each appends one JSON line to ``--out`` (default ``benchmarks/dwp/probes.jsonl``).

Example:
    >>> _overrides(["fit_steps=10", "source_init=torch"])
    {'fit_steps': 10, 'source_init': 'torch'}
"""

from __future__ import annotations

import argparse
import ast
import json
import math
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoContinuous
from pyro.optim import Adam

from benchmarks import harness
from benchmarks.dwp.bench import DWPBenchConfig, fit_cell, mnist_pool_and_test
from pyro_bnn.dwp import DeepWeightPrior, init_to_decoder_mean
from pyro_bnn.guides import AutoImplicitPriorNormal
from pyro_bnn.metrics import accuracy
from pyro_bnn.zoo.dwp_cnn import DWPCNN

KERNELS = ("net.conv1.weight", "net.conv2.weight")


def _overrides(pairs: Sequence[str]) -> dict:
    """``key=value`` pairs, each value a Python literal or else a string."""
    out = {}
    for pair in pairs:
        key, value = pair.split("=", 1)
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def _median_norm(w: torch.Tensor) -> float:
    return float(w.detach().reshape(-1, w.shape[-1] ** 2).norm(dim=1).median())


def _guide_layers(post) -> dict:
    """q's median |mean|, median scale and median kernel norm per conv layer."""
    guide = post.guide
    if isinstance(guide, AutoContinuous):
        loc, scale = guide._loc_scale()
        locs = {s["name"]: v for s, v in guide._unpack_latent(loc)}
        scales = {s["name"]: v for s, v in guide._unpack_latent(scale)}
    layers = {}
    for site in KERNELS:
        if isinstance(guide, AutoContinuous):
            shape = post.draws[site].shape[2:]
            loc, scale = locs[site].reshape(shape), scales[site].reshape(shape)
        else:
            loc, scale = guide._get_loc_and_scale(site)
        layers[site] = {
            "median_abs_mean": float(loc.detach().abs().median()),
            "median_scale": float(scale.detach().median()),
            "median_kernel_norm": _median_norm(loc),
        }
    return layers


def fit_probe(prior_file: Path, *, prior: str, size: int, draw: int, overrides: dict) -> dict:
    """One table cell under ``overrides``, with what the table does not record."""
    config = DWPBenchConfig(**overrides)
    data = mnist_pool_and_test(config)
    dwp = DeepWeightPrior.load(prior_file)
    post, x, y, _ = fit_cell(prior, size, draw, config=config, dwp=dwp, data=data)
    test_x, test_y = data[2], data[3]
    return {
        "prior": prior,
        "size": size,
        "draw": draw,
        "accuracy": accuracy(post.predict(test_x, num_samples=None).probs, test_y),
        "train_accuracy": accuracy(post.predict(x, num_samples=None).probs, y),
        "first_loss": float(post.losses[0][0]),
        "final_loss": float(sum(post.losses[0][-20:]) / 20),
        "fit_s": post.wall_time,
        "layers": _guide_layers(post),
    }


def kl_only_probe(prior_file: Path, *, steps: int = 200, lr: float = 5e-3) -> dict:
    """The KL term alone from the decoder means (log-variance −10): median kernel norms."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    net = DWPCNN(prior=DeepWeightPrior.load(prior_file)).net
    image = torch.zeros(1, 1, 28, 28)

    def model():
        net(image)  # samples every kernel; no likelihood

    guide = AutoImplicitPriorNormal(
        model, init_loc_fn=init_to_decoder_mean, init_scale=math.exp(-5)
    )
    guide()
    before = {site: _median_norm(guide.median()[site]) for site in KERNELS}
    svi = SVI(model, guide, Adam({"lr": lr}), Trace_ELBO())
    for _ in range(steps):
        svi.step()
    after = {site: _median_norm(guide.median()[site]) for site in KERNELS}
    return {"steps": steps, "lr": lr, "before": before, "after": after}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dwp.probes")
    parser.add_argument("kind", choices=("fit", "kl-only"))
    parser.add_argument("prior_file", type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--prior", default="dwp")
    parser.add_argument("--size", type=int, default=50)
    parser.add_argument("--draw", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/dwp/probes.jsonl"))
    args = parser.parse_args(argv)
    overrides = _overrides(args.set)
    torch.set_num_threads(1)
    if args.kind == "fit":
        row = fit_probe(args.prior_file, prior=args.prior, size=args.size, draw=args.draw,
                        overrides=overrides)  # fmt: skip
    else:
        row = kl_only_probe(args.prior_file)
    row = {"name": args.name, "kind": args.kind, "prior_file": str(args.prior_file),
           "overrides": overrides, **row, "date": date.today().isoformat(),
           "machine": harness.machine()}  # fmt: skip
    print(json.dumps(row, indent=1))
    with args.out.open("a") as f:
        f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
