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

``python -m benchmarks.dwp.probes density PRIOR_FILE --name N`` asks how each layer's
kernel VAE treats small kernels. It shrinks 200 decoder means μ(z) (z ~ N(0, I)) by s, and
records the median of log p(s·μ) (:meth:`~pyro_bnn.dwp.KernelVAE.log_density`, 32 draws)
for each s from 1 down to 0. A density that climbs as s falls pulls kernels to zero.

``python -m benchmarks.dwp.probes vae PRIOR_FILE --name N --kernels SOURCE --save FILE
[--set hidden=H epochs=E max_kernels=M layer=L]`` retrains one layer's VAE (default
``*conv2``, 16 wide, 100 epochs on 10,000 kernels). The kernels come from SOURCE: the
bench's ``source_kernels.pt`` cache, filtered as the bench filters them, or an ``.npy``
file of k×k kernels. It saves the prior with that VAE to FILE and records its density
probe.

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
from benchmarks.dwp.bench import (
    DWPBenchConfig,
    fit_cell,
    mnist_pool_and_test,
    read_kernel_file,
)
from pyro_bnn.dwp import DeepWeightPrior, init_to_decoder_mean
from pyro_bnn.guides import AutoImplicitPriorNormal
from pyro_bnn.metrics import accuracy
from pyro_bnn.zoo.dwp_cnn import CONV_LAYERS, DWPCNN, KERNEL_SIZES

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


SHRINKS = (1.0, 0.75, 0.5, 0.25, 0.1, 0.0)


@torch.no_grad()
def density_probe(prior: DeepWeightPrior, *, num_kernels: int = 200) -> dict:
    """Per layer: the median log-density of decoder means shrunk by each s in SHRINKS, with
    the median norm of those means and the median decoder scale."""
    torch.manual_seed(0)
    layers = {}
    for pattern, vae in prior.layers.items():
        loc, scale = vae.decoder(torch.randn(num_kernels, vae.z_dim))
        layers[pattern] = {
            "mean_norm_median": float(loc.flatten(1).norm(dim=1).median()),
            "decoder_scale_median": float(scale.median()),
            "log_density_median": {
                str(s): float(vae.log_density(s * loc).median()) for s in SHRINKS
            },
        }
    return {"layers": layers}


def _kernels(source: Path, layer: str) -> torch.Tensor:
    """k×k kernels for a VAE: from an ``.npy`` file, or the bench's source-kernel cache
    filtered as the bench does (its default ``min_norm_ratio`` for that layer)."""
    from pyro_bnn.dwp import collect_kernels

    name = next(n for n, pattern in CONV_LAYERS.items() if pattern == layer)
    if source.suffix == ".npy":
        return read_kernel_file(source, kernel_size=KERNEL_SIZES[name])
    cache = torch.load(source, map_location="cpu", weights_only=True)["kernels"]
    ratio = DWPBenchConfig().min_norm_ratio[list(CONV_LAYERS).index(name)]
    return collect_kernels(cache[name], min_norm_ratio=ratio).kernels


def vae_probe(prior_file: Path, *, kernels: Path, save: Path, overrides: dict) -> dict:
    """Retrain one layer's kernel VAE (``layer``, ``hidden``, ``epochs``, ``max_kernels``
    in ``overrides``), save the prior with it, and probe its density."""
    import numpy as np

    from pyro_bnn.dwp import train_kernel_vae

    layer = overrides.get("layer", "*conv2")
    hidden, epochs = overrides.get("hidden", 16), overrides.get("epochs", 100)
    max_kernels = overrides.get("max_kernels", 10_000)
    prior = DeepWeightPrior.load(prior_file)
    old = prior.layers[layer]
    train = _kernels(kernels, layer)
    if len(train) > max_kernels:
        pick = np.random.default_rng(0).choice(len(train), size=max_kernels, replace=False)
        train = train[torch.from_numpy(pick)]
    vae, history = train_kernel_vae(train, z_dim=old.z_dim, hidden=hidden,
                                    layers=old.config["layers"], num_epochs=epochs, seed=1,
                                    progress_bar=False)  # fmt: skip
    retrained = DeepWeightPrior({**prior.layers, layer: vae})
    retrained.save(save)
    return {
        "layer": layer,
        "kernels": str(kernels),
        "training_kernels": len(train),
        "kernel_norm_median": float(train.flatten(1).norm(dim=1).median()),
        "vae_final_loss": history[-1],
        "saved": str(save),
        **density_probe(DeepWeightPrior({layer: vae})),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dwp.probes")
    parser.add_argument("kind", choices=("fit", "kl-only", "density", "vae"))
    parser.add_argument("prior_file", type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--prior", default="dwp")
    parser.add_argument("--size", type=int, default=50)
    parser.add_argument("--draw", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--kernels", type=Path, help="vae: source_kernels.pt or a .npy file")
    parser.add_argument("--save", type=Path, help="vae: where the retrained prior goes")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/dwp/probes.jsonl"))
    args = parser.parse_args(argv)
    overrides = _overrides(args.set)
    torch.set_num_threads(1)
    if args.kind == "fit":
        row = fit_probe(args.prior_file, prior=args.prior, size=args.size, draw=args.draw,
                        overrides=overrides)  # fmt: skip
    elif args.kind == "kl-only":
        row = kl_only_probe(args.prior_file)
    elif args.kind == "density":
        row = density_probe(DeepWeightPrior.load(args.prior_file))
    else:
        if args.kernels is None or args.save is None:
            parser.error("vae needs --kernels and --save")
        row = vae_probe(args.prior_file, kernels=args.kernels, save=args.save,
                        overrides=overrides)  # fmt: skip
    row = {"name": args.name, "kind": args.kind, "prior_file": str(args.prior_file),
           "overrides": overrides, **row, "date": date.today().isoformat(),
           "machine": harness.machine()}  # fmt: skip
    print(json.dumps(row, indent=1))
    with args.out.open("a") as f:
        f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
