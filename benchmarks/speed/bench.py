"""``pyro-bnn bench speed``: pyro-bnn's inference against references, in one process.

The model everywhere: 1 hidden layer of 50 ReLU units, N(0, 1) priors on every weight,
Gaussian likelihood with a Gamma(1, 0.05) prior on the noise precision, float32. Data:
boston split 0 when the UCI directory is there, else synthetic data of the same shape.

Every figure is reported beside its reference from the same run:
- SVI step time against a plain-torch deterministic Adam step (the floor), a hand-written
  Bayes-by-Backprop step and NumPyro's SVI step; a full-batch ``sghmc`` step against the
  floor;
- NUTS time per gradient and ESS/s of the test predictions (min over test points) against
  NumPyro's NUTS with the same model, warmup, draws and tree depth;
- ``predict`` on 10,000 inputs × 1,000 draws: time and peak memory.

Example:
    >>> SpeedConfig.tiny().svi_steps
    50
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer.autoguide import init_to_median

from benchmarks import harness
from pyro_bnn import zoo
from pyro_bnn.arviz import prediction_diagnostics
from pyro_bnn.datasets import Split, uci
from pyro_bnn.diagnostics import row_diagnostics
from pyro_bnn.infer import fit

__all__ = ["SpeedConfig", "format_markdown", "main", "run_speed"]

HIDDEN = 50
PRECISION = (1.0, 0.05)  # Gamma(concentration, rate) on the noise precision


@dataclass(frozen=True, kw_only=True)
class SpeedConfig(harness.Settings):
    svi_steps: int = 2000
    nuts_warmup: int = 300
    nuts_samples: int = 300
    max_tree_depths: tuple[int, ...] = (10, 5)
    target_accept_prob: float = 0.8
    predict_rows: int = 10_000
    predict_draws: int = 1_000
    seed: int = 0
    numpyro: bool = True
    data_dir: str | None = None
    threads: int = 2
    compute_bound: bool = False
    ensemble_members: int = 5
    ensemble_steps: int = 2000

    @classmethod
    def tiny_settings(cls) -> dict[str, Any]:
        return dict(svi_steps=50, nuts_warmup=10, nuts_samples=10, max_tree_depths=(3,),
                    predict_rows=500, predict_draws=50, ensemble_members=2,
                    ensemble_steps=20)  # fmt: skip


def _data(config: SpeedConfig) -> tuple[Split, str]:
    try:
        return uci("boston", 0, data_dir=config.data_dir), "boston split 0"
    except FileNotFoundError:
        g = torch.Generator().manual_seed(config.seed)
        x = torch.randn(506, 13, generator=g)
        w = torch.randn(13, generator=g) / 13**0.5
        y = torch.tanh(x @ w) + 0.3 * torch.randn(506, generator=g)
        y = (y - y[:455].mean()) / y[:455].std()
        return Split(x[:455], y[:455], x[455:], y[455:]), "synthetic (boston's shape)"


def _model(in_features: int = 13, hidden: int = HIDDEN):
    return zoo.build(
        "mlp-regression",
        in_features=in_features,
        hidden=(hidden,),
        precision_prior=dist.Gamma(*map(torch.tensor, PRECISION)),
    )


# the shortest total time the bench reports: a figure timed over less (a reference that
# ran too short, or whose compilation swallowed its run) is "not measured", and so is any
# ratio it would enter (perf_counter's resolution is far finer, but scheduling is not)
MIN_TIMED_S = 0.01


def _per_step_ms(run: Callable[[int], None], steps: int) -> float | None:
    """Time of one step of a plain torch loop, after a warm-up; None when the whole timed
    loop took less than :data:`MIN_TIMED_S`."""
    run(10)
    start = time.perf_counter()
    run(steps)
    seconds = time.perf_counter() - start
    return None if seconds < MIN_TIMED_S else 1000 * seconds / steps


def _floor_step(data: Split, steps: int) -> None:
    net = torch.nn.Sequential(
        torch.nn.Linear(13, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, 1)
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(steps):
        opt.zero_grad()
        F.mse_loss(net(data.x_train)[:, 0], data.y_train).backward()
        opt.step()


def _bbb_step(data: Split, steps: int) -> None:
    """Hand-written Bayes by Backprop: μ, softplus ρ, closed-form KL to N(0, 1), one sample."""
    shapes = [(HIDDEN, 13), (HIDDEN,), (1, HIDDEN), (1,)]
    mu = [(0.1 * torch.randn(s)).requires_grad_() for s in shapes]
    rho = [torch.full(s, -5.0).requires_grad_() for s in shapes]
    log_precision = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([*mu, *rho, log_precision], lr=1e-3)
    x, y = data.x_train, data.y_train
    for _ in range(steps):
        opt.zero_grad()
        sigma = [F.softplus(r) for r in rho]
        w = [m + s * torch.randn_like(m) for m, s in zip(mu, sigma, strict=True)]
        f = (torch.relu(x @ w[0].T + w[1]) @ w[2].T + w[3])[:, 0]
        precision = log_precision.exp()
        nll = 0.5 * precision * ((y - f) ** 2).sum() - 0.5 * len(y) * log_precision
        kl = sum((0.5 * (s**2 + m**2 - 1) - s.log()).sum() for m, s in zip(mu, sigma, strict=True))
        (nll + kl).backward()
        opt.step()


def _pyro_svi_step_ms(
    data: Split, *, backend: str, config: SpeedConfig, method: str = "meanfield"
) -> float:
    """Time of one SVI step inside ``fit``'s loop (set-up and compilation excluded)."""
    post = fit(
        _model(),
        data.x_train,
        data.y_train,
        method=method,
        num_steps=config.svi_steps,
        lr=1e-3,
        num_draws=1,
        backend=backend,
        progress_bar=False,
        seed=config.seed,
    )
    return 1000 * post.timings["steps_s"] / post.timings["steps"]


def _sgmcmc_step_ms(data: Split, *, backend: str, config: SpeedConfig) -> float:
    """Time of one full-batch ``sghmc`` step (gradient and update, one compiled graph)
    inside ``fit``'s loop, compilation excluded."""
    post = fit(
        _model(),
        data.x_train,
        data.y_train,
        method="sghmc",
        step_size=1e-6,  # a time, not a posterior: small enough never to diverge
        init_strategy=init_to_median,
        burn_in=config.svi_steps - 1,
        num_samples=1,
        backend=backend,
        progress_bar=False,
        seed=config.seed,
    )
    return 1000 * post.timings["sampling_s"] / post.timings["gradients"]


def _same_posterior(data: Split, config: SpeedConfig) -> dict:
    """The compiled ELBO and Pyro's Trace_ELBO fit the same posterior: final loss (mean and
    sd over the last 20 % of steps) and test log-likelihood, same seed and settings."""
    from pyro_bnn.metrics import test_log_likelihood

    report = {}
    for name, backend in (("compiled", "jit"), ("trace_elbo", "pyro")):
        post = fit(
            _model(),
            data.x_train,
            data.y_train,
            method="meanfield",
            num_steps=config.svi_steps,
            lr=0.01,
            num_draws=200,
            backend=backend,
            progress_bar=False,
            seed=config.seed,
        )
        losses = post.losses[0]
        tail = np.asarray(losses[-max(len(losses) // 5, 1) :])
        report[name] = {
            "final_loss_mean": float(tail.mean()),
            "final_loss_sd": float(tail.std()),
            "test_ll": test_log_likelihood(post.log_likelihood(data.x_test, data.y_test)),
        }
    return report


def _pyro_nuts(
    data: Split,
    config: SpeedConfig,
    depth: int,
    *,
    hidden: int = HIDDEN,
    warmup: int | None = None,
    draws: int | None = None,
) -> dict:
    """NUTS timed over its sampling loop (warmup included, compilation excluded)."""
    post = fit(
        _model(data.x_train.shape[1], hidden),
        data.x_train,
        data.y_train,
        method="nuts",
        warmup_steps=config.nuts_warmup if warmup is None else warmup,
        num_samples=config.nuts_samples if draws is None else draws,
        max_tree_depth=depth,
        target_accept_prob=config.target_accept_prob,
        progress_bar=False,
        seed=config.seed,
    )
    seconds, gradients = post.timings["sampling_s"], post.timings["gradients"]
    ess = prediction_diagnostics(post, data.x_test)["min_ess"]
    return {
        "sampling_s": seconds,
        "gradients": gradients,
        "ms_per_gradient": 1000 * seconds / gradients,
        "mean_steps_per_draw": float(post.sample_stats["n_steps"].mean()),
        "min_ess_test_predictions": ess,
        "ess_per_s": ess / seconds,
    }


def _ensemble(data: Split, config: SpeedConfig) -> dict:
    """Wall time of ``ensemble_members`` MAP members in worker processes (one per core, up
    to the members; the chain runner's default) against the same members one after another
    in this process, after one untimed member (imports and compilation)."""

    def members(processes: int, num: int) -> float:
        post = fit(
            _model(data.x_train.shape[1]), data.x_train, data.y_train, method="ensemble",
            num_members=num, num_steps=config.ensemble_steps, chain_processes=processes,
            progress_bar=False, seed=config.seed,
        )  # fmt: skip
        return post.wall_time

    members(1, 1)
    here = members(1, config.ensemble_members)
    workers = min(config.ensemble_members, os.cpu_count() or 1)
    return {
        "members": config.ensemble_members,
        "processes": workers,
        "sequential_s": here,
        "parallel_s": members(workers, config.ensemble_members),
    }


def _predict(data: Split, config: SpeedConfig) -> dict:
    post = fit(
        _model(),
        data.x_train,
        data.y_train,
        method="meanfield",
        num_steps=10,
        num_draws=config.predict_draws,
        progress_bar=False,
        seed=config.seed,
    )
    x = torch.randn(config.predict_rows, 13)
    post.predict(x[:10], num_samples=10)  # warm-up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    pred = post.predict(x, num_samples=config.predict_draws)
    wall = time.perf_counter() - start
    peak_growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    output_mb = pred.samples.numel() * 4 * 3 / 2**20  # samples, loc and noise variance draws
    return {
        "rows": config.predict_rows,
        "draws": config.predict_draws,
        "wall_s": wall,
        "peak_rss_growth_mb": peak_growth_mb,
        "output_mb": output_mb,
    }


def _numpyro_available(config: SpeedConfig) -> bool:
    return config.numpyro and importlib.util.find_spec("numpyro") is not None


def _numpyro_model(hidden: int) -> Callable:
    import jax
    import numpyro
    import numpyro.distributions as nd

    def model(x, y=None):
        d = x.shape[1]
        w1 = numpyro.sample("w1", nd.Normal(0, 1).expand([d, hidden]).to_event(2))
        b1 = numpyro.sample("b1", nd.Normal(0, 1).expand([hidden]).to_event(1))
        w2 = numpyro.sample("w2", nd.Normal(0, 1).expand([hidden, 1]).to_event(2))
        b2 = numpyro.sample("b2", nd.Normal(0, 1).expand([1]).to_event(1))
        precision = numpyro.sample("precision", nd.Gamma(*PRECISION))
        f = (jax.nn.relu(x @ w1 + b1) @ w2 + b2)[:, 0]
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("obs", nd.Normal(f, precision**-0.5), obs=y)

    return model


def _numpyro_nuts(
    data: Split,
    config: SpeedConfig,
    depth: int,
    *,
    hidden: int = HIDDEN,
    warmup: int | None = None,
    draws: int | None = None,
) -> dict:
    """NumPyro's NUTS on the same model, timed on a warm second run of the same sampler
    (its compiled functions cached by the first), never by subtracting a compile time;
    a run shorter than :data:`MIN_TIMED_S` is reported as not measured."""
    import jax
    import jax.numpy as jnp
    from numpyro.infer import MCMC, NUTS

    warmup = config.nuts_warmup if warmup is None else warmup
    draws = config.nuts_samples if draws is None else draws
    x, y = jnp.asarray(data.x_train.numpy()), jnp.asarray(data.y_train.numpy())
    x_test = jnp.asarray(data.x_test.numpy())
    model = _numpyro_model(hidden)

    def sampler(num_warmup: int, num_samples: int) -> MCMC:
        kernel = NUTS(model, max_tree_depth=depth, target_accept_prob=config.target_accept_prob)
        return MCMC(kernel, num_warmup=num_warmup, num_samples=num_samples, progress_bar=False)

    nuts = sampler(warmup, draws)
    nuts.run(jax.random.PRNGKey(config.seed + 1), x, y, extra_fields=("num_steps",))
    jax.block_until_ready(nuts.get_samples())  # compiled, and run once
    start = time.perf_counter()
    nuts.run(jax.random.PRNGKey(config.seed), x, y, extra_fields=("num_steps",))
    samples = nuts.get_samples()
    jax.block_until_ready(samples)
    seconds = time.perf_counter() - start
    if seconds < MIN_TIMED_S:
        return {"not_measured": f"its warm run took {seconds:.2g} s, under {MIN_TIMED_S} s"}
    steps = np.asarray(nuts.get_extra_fields()["num_steps"])  # sampling draws only
    f = jax.vmap(lambda s: (jax.nn.relu(x_test @ s["w1"] + s["b1"]) @ s["w2"] + s["b2"])[:, 0])(
        samples
    )
    f = np.asarray(f)[None]
    ess = row_diagnostics(f)["min_ess"]
    gradients = float(steps.mean()) * (warmup + draws)  # warmup assumed as long as sampling
    return {
        "sampling_s": seconds,
        "mean_steps_per_draw": float(steps.mean()),
        "ms_per_gradient": 1000 * seconds / gradients,
        "min_ess_test_predictions": ess,
        "ess_per_s": ess / seconds,
    }


def _numpyro(data: Split, config: SpeedConfig) -> dict | None:
    if not _numpyro_available(config):
        return None
    import jax
    import jax.numpy as jnp
    import numpyro
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal

    numpyro.set_host_device_count(1)
    x, y = jnp.asarray(data.x_train.numpy()), jnp.asarray(data.y_train.numpy())
    model = _numpyro_model(HIDDEN)
    svi = SVI(model, AutoNormal(model, init_scale=0.01), numpyro.optim.Adam(1e-3), Trace_ELBO())
    update = jax.jit(svi.update)
    state = svi.init(jax.random.PRNGKey(config.seed), x, y)

    def run_svi(steps: int) -> None:  # the jitted update in a Python loop, like a user's
        nonlocal state
        for _ in range(steps):
            state, loss = update(state, x, y)
        jax.block_until_ready(loss)

    return {
        "svi_step_ms": _per_step_ms(run_svi, config.svi_steps),
        "nuts": {str(d): _numpyro_nuts(data, config, d) for d in config.max_tree_depths},
        "version": numpyro.__version__,
    }


def protein_like(*, seed: int = 0, rows: int = 45_730, features: int = 9) -> Split:
    """Synthetic data of protein's size (45,730 × 9), split 90/10, standardised."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, features, generator=g)
    w = torch.randn(features, 16, generator=g) / features**0.5
    y = torch.tanh(x @ w).sum(-1) / 4 + 0.5 * torch.randn(rows, generator=g)
    y = (y - y.mean()) / y.std()
    cut = int(0.9 * rows)
    return Split(x[:cut], y[:cut], x[cut:], y[cut:])


def run_compute_bound(
    config: SpeedConfig, *, warmup: int = 100, draws: int = 100, depth: int = 5, hidden: int = 100
) -> dict:
    """NUTS on a compute-bound model: protein-sized synthetic data, 100 hidden units."""
    torch.set_num_threads(config.threads)
    data = protein_like(seed=config.seed)
    settings = dict(hidden=hidden, warmup=warmup, draws=draws)
    result = {
        "data": "synthetic 45,730 x 9 (41,157 train / 4,573 test)",
        "hidden": hidden,
        "warmup": warmup,
        "draws": draws,
        "max_tree_depth": depth,
        "pyro_bnn": _pyro_nuts(data, config, depth, **settings),
    }
    if _numpyro_available(config):
        result["numpyro"] = _numpyro_nuts(data, config, depth, **settings)
    return result


def run_speed(config: SpeedConfig, *, out: Path | None = None) -> dict:
    """Run every measurement; write ``speed.json`` and ``speed.md`` to ``out`` if given."""
    torch.set_num_threads(config.threads)
    data, source = _data(config)
    results: dict = {
        "date": date.today().isoformat(),
        "machine": harness.machine(),
        "data": source,
        "config": config.record(),
        "svi_ms_per_step": {
            "floor_adam": _per_step_ms(lambda n: _floor_step(data, n), config.svi_steps),
            "hand_written_bbb": _per_step_ms(lambda n: _bbb_step(data, n), config.svi_steps),
            "pyro_bnn_meanfield": _pyro_svi_step_ms(data, backend="jit", config=config),
            "pyro_bnn_meanfield_inductor": _pyro_svi_step_ms(
                data, backend="inductor", config=config
            ),
            "pyro_trace_elbo_autonormal_equivalent": _pyro_svi_step_ms(
                data, backend="pyro", config=config
            ),
            # the deterministic ELBO: moment propagation, no weight draw, same guide; its
            # compiled step (the default) and Pyro's SVI.step on the same loss
            "pyro_bnn_dvi": _pyro_svi_step_ms(data, backend="jit", config=config, method="dvi"),
            "pyro_bnn_dvi_pyro": _pyro_svi_step_ms(
                data, backend="pyro", config=config, method="dvi"
            ),
        },
        "sgmcmc_ms_per_step": {
            "sghmc": _sgmcmc_step_ms(data, backend="jit", config=config),
            "sghmc_inductor": _sgmcmc_step_ms(data, backend="inductor", config=config),
        },
        "same_posterior": _same_posterior(data, config),
        "nuts": {str(d): _pyro_nuts(data, config, d) for d in config.max_tree_depths},
        "predict": _predict(data, config),
        "ensemble": _ensemble(data, config),
    }
    reference = _numpyro(data, config)
    if reference is not None:
        results["numpyro"] = reference
    if config.compute_bound:
        results["compute_bound"] = run_compute_bound(config)
    if out is not None:
        harness.save(out, results, format_markdown(results), name="speed")
    return results


def _measured(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def _row(
    what: str,
    ours: float | None,
    unit: str,
    ref_name: str = "",
    ref: float | None = None,
    fmt: str = ".3f",
) -> str:
    """A table row: our figure, the reference's and their ratio. A ratio is printed only
    when both figures were measured in this run; otherwise the row says which was not."""
    value = f"{ours:{fmt}}{unit}" if _measured(ours) else "not measured"
    if not ref_name:
        return harness.table_row(what, value, "") + " |"  # no reference: an empty ratio cell
    if not _measured(ref):
        return harness.table_row(what, value, f"{ref_name}: not measured", "no ratio")
    if not _measured(ours):
        return harness.table_row(what, value, f"{ref_name} {ref:{fmt}}{unit}", "no ratio")
    return harness.table_row(what, value, f"{ref_name} {ref:{fmt}}{unit}", f"{ours / ref:.2f}")


def _nuts_rows(ours: dict, numpyro: dict) -> list[str]:
    rows = []
    for depth, mine in ours.items():
        theirs = numpyro.get(depth, {})
        rows += [
            _row(
                f"NUTS depth {depth}: ms per gradient",
                mine["ms_per_gradient"],
                " ms",
                "NumPyro",
                theirs.get("ms_per_gradient"),
            ),
            _row(
                f"NUTS depth {depth}: leapfrog steps per draw",
                mine["mean_steps_per_draw"],
                "",
                "NumPyro",
                theirs.get("mean_steps_per_draw"),
                fmt=".0f",
            ),
            _row(
                f"NUTS depth {depth}: min ESS of test predictions",
                mine["min_ess_test_predictions"],
                "",
                "NumPyro",
                theirs.get("min_ess_test_predictions"),
                fmt=".1f",
            ),
            _row(
                f"NUTS depth {depth}: min ESS of test predictions per s",
                mine["ess_per_s"],
                "",
                "NumPyro, same depth",
                theirs.get("ess_per_s"),
            ),
        ]
    if "10" in numpyro:
        for depth, mine in ours.items():
            rows.append(
                _row(
                    f"NUTS depth {depth}: min ESS of test predictions per s",
                    mine["ess_per_s"],
                    "",
                    "NumPyro at its default depth 10",
                    numpyro["10"].get("ess_per_s"),
                )
            )
    return rows


def format_markdown(results: dict) -> str:
    """The table the README quotes: each figure beside its reference and their ratio."""
    svi, nuts, pred = results["svi_ms_per_step"], results["nuts"], results["predict"]
    sg = results.get("sgmcmc_ms_per_step", {})  # runs before 2026-11-28 have none
    ref = results.get("numpyro") or {}
    bbb = svi["hand_written_bbb"]
    rows = [
        _row("SVI step: deterministic Adam (the floor)", svi["floor_adam"], " ms"),
        _row("SVI step: hand-written torch BBB", bbb, " ms", "floor", svi["floor_adam"]),
        _row("SVI step: pyro-bnn `meanfield`", svi["pyro_bnn_meanfield"], " ms", "BBB", bbb),
        _row(
            'SVI step: pyro-bnn `meanfield`, `backend="inductor"`',
            svi["pyro_bnn_meanfield_inductor"],
            " ms",
            "BBB",
            bbb,
        ),
        _row(
            "SVI step: pyro-bnn `meanfield`",
            svi["pyro_bnn_meanfield"],
            " ms",
            "NumPyro AutoNormal",
            ref.get("svi_step_ms"),
        ),
        _row(
            'SVI step: pyro-bnn `meanfield`, `backend="inductor"`',
            svi["pyro_bnn_meanfield_inductor"],
            " ms",
            "NumPyro AutoNormal",
            ref.get("svi_step_ms"),
        ),
        _row(
            "SVI step: pyro-bnn `meanfield`",
            svi["pyro_bnn_meanfield"],
            " ms",
            "floor",
            svi["floor_adam"],
        ),
        _row(
            'SVI step: pyro-bnn `meanfield`, `backend="inductor"`',
            svi["pyro_bnn_meanfield_inductor"],
            " ms",
            "floor",
            svi["floor_adam"],
        ),
        _row(
            'SVI step: Pyro `Trace_ELBO` (`backend="pyro"`)',
            svi["pyro_trace_elbo_autonormal_equivalent"],
            " ms",
            "BBB",
            bbb,
        ),
        *(
            [
                _row(
                    "SVI step: pyro-bnn `dvi` (deterministic ELBO)",
                    svi["pyro_bnn_dvi"],
                    " ms",
                    "`meanfield`",
                    svi["pyro_bnn_meanfield"],
                )
            ]
            if "pyro_bnn_dvi" in svi
            else []
        ),
        *(
            [
                _row(
                    'SVI step: pyro-bnn `dvi`, `backend="pyro"` (Pyro\'s `SVI.step`)',
                    svi["pyro_bnn_dvi_pyro"],
                    " ms",
                    "`dvi`",
                    svi["pyro_bnn_dvi"],
                )
            ]
            if "pyro_bnn_dvi_pyro" in svi
            else []
        ),
        *(
            _row(
                f"SG-MCMC step: pyro-bnn `sghmc`{label}", sg[key], " ms", "floor", svi["floor_adam"]
            )
            for key, label in (("sghmc", ""), ("sghmc_inductor", ', `backend="inductor"`'))
            if key in sg
        ),
        *_nuts_rows(nuts, ref.get("nuts", {})),
        _row(
            f"predict: {pred['rows']:,} inputs × {pred['draws']:,} draws",
            pred["wall_s"],
            " s",
            "target",
            2.0,
            fmt=".2f",
        ),
        _row(
            "predict: peak RSS growth",
            pred["peak_rss_growth_mb"],
            " MB",
            "its output arrays",
            pred["output_mb"],
            fmt=".0f",
        ),
    ]
    if "compute_bound" in results:
        bound = results["compute_bound"]
        mine, theirs = bound["pyro_bnn"], bound.get("numpyro", {})
        label = (
            f"compute-bound ({bound['data']}, {bound['hidden']} units, depth "
            f"{bound['max_tree_depth']}, {bound['warmup']} + {bound['draws']})"
        )
        rows += [
            _row(
                f"NUTS {label}: ms per gradient",
                mine["ms_per_gradient"],
                " ms",
                "NumPyro",
                theirs.get("ms_per_gradient"),
            ),
            _row(
                f"NUTS {label}: min ESS of test predictions",
                mine["min_ess_test_predictions"],
                "",
                "NumPyro",
                theirs.get("min_ess_test_predictions"),
                fmt=".1f",
            ),
            _row(
                f"NUTS {label}: min ESS of test predictions per s",
                mine["ess_per_s"],
                "",
                "NumPyro",
                theirs.get("ess_per_s"),
            ),
        ]
    same = results["same_posterior"]
    rows += [
        harness.table_row(
            "meanfield final loss, compiled ELBO (mean ± sd, last 20 % of steps)",
            f"{same['compiled']['final_loss_mean']:.1f} ± {same['compiled']['final_loss_sd']:.1f}",
            f"`Trace_ELBO` {same['trace_elbo']['final_loss_mean']:.1f} ± "
            f"{same['trace_elbo']['final_loss_sd']:.1f}",
        )
        + " |",
        harness.table_row(
            "meanfield test log-likelihood (standardised y)",
            f"{same['compiled']['test_ll']:.3f}",
            f"`Trace_ELBO` {same['trace_elbo']['test_ll']:.3f}",
        )
        + " |",
    ]
    if "ensemble" in results:
        ens = results["ensemble"]
        rows.append(
            _row(
                f"ensemble of {ens['members']} MAP members, {ens['processes']} worker processes",
                ens["parallel_s"],
                " s",
                f"{ens['members']} × one member, here",
                ens["sequential_s"],
                fmt=".1f",
            )
        )
    cfg = results["config"]
    header = (
        f"Measured {results['date']} on {results['machine']}; data: {results['data']}. "
        f"NUTS: one chain, {cfg['nuts_warmup']} warmup + {cfg['nuts_samples']} draws, target "
        f"acceptance {cfg['target_accept_prob']}, at each max tree depth; times cover warmup "
        f"and sampling, not compilation (NumPyro: a warm second run of the compiled sampler). "
        f"A figure timed over less than {MIN_TIMED_S} s is not measured, nor is its ratio."
    )
    return (
        "\n".join(
            [
                header,
                "",
                *harness.table_header("measurement", "pyro-bnn", "reference", "ratio"),
                *rows,
            ]
        )
        + "\n"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = harness.command("speed", "SVI, NUTS and predict speed against references", data="uci/")
    parser.add_argument("--no-numpyro", action="store_true", help="skip the NumPyro reference")
    parser.add_argument(
        "--compute-bound",
        action="store_true",
        help="also run NUTS on protein-sized synthetic data (100 units)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=SpeedConfig.threads,
        help="torch threads (give JAX the same through XLA_FLAGS, see the README)",
    )
    return parser


def _command(args: argparse.Namespace) -> int:
    options = dict(
        data_dir=args.data_dir,
        numpyro=not args.no_numpyro,
        compute_bound=args.compute_bound,
        threads=args.threads,
    )
    config = SpeedConfig.tiny(**options) if args.quick else SpeedConfig(**options)
    results = run_speed(config, out=Path(args.out))
    print(format_markdown(results))
    print(f"written to {args.out}/speed.json and speed.md")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``pyro-bnn bench speed …`` / ``python -m benchmarks.speed …``."""
    return harness.main(build_parser(), _command, argv)
