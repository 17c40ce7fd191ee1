"""``pyro-bnn bench mnist-bbb``: Bayes by Backprop against SGD and dropout on MNIST.

Data: the 10,000 MNIST images of ``<data_dir>/mnist`` split once, seeded, into 8,000
train and 2,000 test (:func:`pyro_bnn.datasets.mnist`); pixels / 126 as in the paper. A
validation set (``validation`` images) is carved from the train part with another seeded
permutation; every candidate trains on the rest, the best validation error picks each
method's setting, and that fitted network is scored once on the test images.

Methods, all with two hidden ReLU layers of ``width`` units and minibatches of
``batch_size``:

- ``sgd``: a plain torch network, SGD with momentum, no regularisation;
- ``mcdropout``: MC dropout (0.2 on the inputs, 0.5 on hidden units) as
  ``fit(method="mcdropout")`` on ``bbb-mlp`` under an ensemble member's prior, Adam at
  ``bbb_lr``, ``predict_draws`` stochastic passes;
- ``bbb_gaussian``: the zoo's ``bbb-mlp`` with a N(0, σ²) prior, ``meanfield`` SVI with
  Blundell's minibatch KL weighting;
- ``bbb_mixture``: the same with the scale-mixture prior; its (π, σ1, σ2) candidates are
  by default a Latin square over the paper's grid (:func:`latin_square`: 9 of its 27
  points, every pair of levels of two factors once), which fits the 60-minute budget;
  ``mixture_grid`` takes any other set, the full grid included;
- ``ensemble``: a deep ensemble (Lakshminarayanan et al. 2017) of ``ensemble_members``
  MAP fits of ``bbb-mlp`` under N(0, σ²) (σ = e^(−``ensemble_neg_log_sigma``), no
  selection), Adam at ``bbb_lr``, without adversarial training (it doubles the cost);
- ``laplace``: one such MAP fit, then last-layer KFAC Laplace with the evidence-tuned
  prior precision and the GLM predictive; its MAP network is scored too, and the time
  and size of its curvature are recorded;
- ``swag``, ``multiswag``: SWAG at such a MAP fit (``swa_epochs`` collected epochs of SGD
  at ``swa_lr``), one run or ``multiswag_members``.

Every method is scored on the test images by error, NLL and ECE (15 bins). A run of some
methods (``--methods``) keeps the other methods' entries of ``results.json`` when their
settings are unchanged, so methods can be measured in separate runs; each entry records
its date.

Outputs (``out/``): ``results.json``, ``results.md`` (test table, pruning table,
local-reparameterization variance ratio) and ``weights.png`` (histogram of the trained
weights, the paper's Figure 2).

Example:
    >>> MnistBBBConfig.tiny().width
    16
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from benchmarks import harness
from benchmarks.plain import train_classifier
from pyro_bnn import zoo
from pyro_bnn.datasets import Split, mnist
from pyro_bnn.infer import fit
from pyro_bnn.init import init_to_fan_in
from pyro_bnn.local_reparam import gradient_variance
from pyro_bnn.meanfield import site_loc_scale
from pyro_bnn.metrics import accuracy, expected_calibration_error, nll
from pyro_bnn.posterior import Posterior
from pyro_bnn.priors import GaussianPrior, ScaleMixturePrior
from pyro_bnn.pruning import prune_by_snr

__all__ = ["MnistBBBConfig", "format_markdown", "main", "run_mnist_bbb"]

PRUNE_FRACTIONS = (0.0, 0.5, 0.75, 0.95, 0.98)
# the paper's scale-mixture grid: π, −log σ1, −log σ2
PAPER_PI = (0.25, 0.5, 0.75)
PAPER_NEG_LOG_SIGMA1 = (0.0, 1.0, 2.0)
PAPER_NEG_LOG_SIGMA2 = (6.0, 7.0, 8.0)


def latin_square(a, b, c) -> tuple[tuple[float, float, float], ...]:
    """The 9 of the 27 points of a 3 × 3 × 3 grid in which every pair of levels of any two
    factors appears exactly once: (a_i, b_j, c_(i+j) mod 3). The documented subset of the
    paper's grid that fits the bench's 60 minutes (27 candidates do not).

    Example:
        >>> len(latin_square((1, 2, 3), (4, 5, 6), (7, 8, 9)))
        9
    """
    return tuple((a[i], b[j], c[(i + j) % 3]) for i in range(3) for j in range(3))


@dataclass(frozen=True, kw_only=True)
class MnistBBBConfig(harness.Settings):
    """Every choice of the bench; ``mixture_grid`` holds (π, −log σ1, −log σ2) triples."""

    width: int = 1200
    batch_size: int = 128
    epochs: int = 40
    validation: int = 1600
    num_train: int = 8000
    seed: int = 0
    sgd_lrs: tuple[float, ...] = (0.01, 0.05)
    momentum: float = 0.9
    bbb_lr: float = 1e-3
    bbb_init_scale: float = 1e-3
    predict_draws: int = 10
    gaussian_log_sigmas: tuple[float, ...] = (0.0, 1.0, 2.0)  # −log σ
    mixture_grid: tuple[tuple[float, float, float], ...] = field(
        default_factory=lambda: latin_square(PAPER_PI, PAPER_NEG_LOG_SIGMA1, PAPER_NEG_LOG_SIGMA2)
    )
    variance_repeats: int = 20
    ensemble_members: int = 5
    ensemble_neg_log_sigma: float = 1.0
    swa_lr: float | None = None  # None: 0.1/λ at the MAP (pyro_bnn.infer.swag)
    swa_epochs: int = 20
    multiswag_members: int = 3
    max_images: int | None = None  # tests: fewer images, same code path
    data_dir: str | None = None

    @classmethod
    def tiny_settings(cls) -> dict[str, Any]:
        return dict(
            width=16,
            epochs=1,
            validation=40,
            num_train=160,
            max_images=200,
            sgd_lrs=(0.05,),
            gaussian_log_sigmas=(1.0,),
            mixture_grid=((0.5, 0.0, 6.0), (0.25, 1.0, 7.0)),
            predict_draws=3,
            variance_repeats=3,
            ensemble_members=2,
            swa_epochs=2,
            multiswag_members=2,
        )


@dataclass
class Candidate:
    method: str
    setting: dict[str, float]
    validation_error: float
    fit_s: float
    predict: Callable[[torch.Tensor], torch.Tensor] = field(repr=False)  # x -> class probs
    weights: np.ndarray = field(repr=False)  # trained weights (posterior means for BBB)
    posterior: Posterior | None = field(default=None, repr=False)
    # more figures for the report from the test images: (x, y) -> {name: value}
    extras: Callable[[torch.Tensor, torch.Tensor], dict[str, Any]] | None = field(
        default=None, repr=False
    )


def _error(probs: torch.Tensor, y: torch.Tensor) -> float:
    return 1.0 - accuracy(probs, y)


def _carve(data: Split, config: MnistBBBConfig) -> tuple[torch.Tensor, ...]:
    order = torch.from_numpy(np.random.default_rng(config.seed + 1).permutation(len(data.x_train)))
    val, rest = order[: config.validation], order[config.validation :]
    return data.x_train[rest], data.y_train[rest], data.x_train[val], data.y_train[val]


def _torch_net(width: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for n_in, n_out in ((784, width), (width, width)):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    layers.append(nn.Linear(width, 10))
    return nn.Sequential(*layers)


def _train_sgd(x, y, *, config: MnistBBBConfig, lr: float) -> nn.Sequential:
    net = _torch_net(config.width)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=config.momentum)
    return train_classifier(
        net, x, y, optimizer, epochs=config.epochs, batch_size=config.batch_size,
        generator=torch.Generator().manual_seed(config.seed), drop_last=True,
    )  # fmt: skip


def _sgd_candidates(method: str, x, y, x_val, y_val, config: MnistBBBConfig) -> list[Candidate]:
    candidates = []
    for lr in config.sgd_lrs:
        torch.manual_seed(config.seed)
        start = time.perf_counter()
        net = _train_sgd(x, y, config=config, lr=lr)
        seconds = time.perf_counter() - start

        def predict(inputs, net=net):
            with torch.no_grad():
                return net(inputs).softmax(-1)

        weights = np.concatenate(
            [m.weight.detach().reshape(-1).numpy() for m in net if isinstance(m, nn.Linear)]
        )
        candidates.append(
            Candidate(method, {"lr": lr}, _error(predict(x_val), y_val), seconds, predict, weights)
        )
    return candidates


def _bbb_candidate(method, setting, prior, x, y, x_val, y_val, config) -> Candidate:
    model = zoo.build("bbb-mlp", width=config.width, prior=prior)
    post = fit(
        model,
        x,
        y,
        method="meanfield",
        batch_size=config.batch_size,
        num_epochs=config.epochs,
        kl_weighting="blundell",
        lr=config.bbb_lr,
        init_loc_fn=init_to_fan_in,
        init_scale=config.bbb_init_scale,
        num_draws=config.predict_draws,
        seed=config.seed,
        progress_bar=False,
    )

    def predict(inputs, post=post):
        return post.predict(inputs, num_samples=None).probs

    weights = _posterior_mean_weights(post)
    return Candidate(method, setting, _error(predict(x_val), y_val), post.wall_time, predict,
                     weights, post)  # fmt: skip


def _posterior_mean_weights(post: Posterior) -> np.ndarray:
    with post.pyro_context(), torch.no_grad():
        return np.concatenate(
            [
                site_loc_scale(post.guide, name)[0].reshape(-1).numpy()
                for name in post.draws
                if name.endswith("weight")
            ]
        )


def _bbb_candidates(method: str, x, y, x_val, y_val, config: MnistBBBConfig) -> list[Candidate]:
    if method == "bbb_gaussian":
        settings = [({"neg_log_sigma": s}, GaussianPrior(scale=math.exp(-s)))
                    for s in config.gaussian_log_sigmas]  # fmt: skip
    else:
        settings = [
            (
                {"pi": pi, "neg_log_sigma1": s1, "neg_log_sigma2": s2},
                ScaleMixturePrior(pi=pi, sigma1=math.exp(-s1), sigma2=math.exp(-s2)),
            )
            for pi, s1, s2 in config.mixture_grid
        ]
    return [
        _bbb_candidate(method, setting, prior, x, y, x_val, y_val, config)
        for setting, prior in settings
    ]


def _ensemble_candidates(
    method: str, x, y, x_val, y_val, config: MnistBBBConfig
) -> list[Candidate]:
    return [_bbb_mlp_fit(
        "ensemble", x, y, x_val, y_val, config, num_members=config.ensemble_members,
        num_epochs=config.epochs, lr=config.bbb_lr, chain_processes=1,
    )]  # fmt: skip


def _laplace_candidates(method: str, x, y, x_val, y_val, config: MnistBBBConfig) -> list[Candidate]:
    """Post-hoc last-layer KFAC Laplace (Daxberger et al. 2021's recommended setting) on a
    MAP fit of ``bbb-mlp`` trained as one ensemble member; the prior precision of the last
    layer's weight and bias tuned by the Laplace evidence; GLM predictive with probit."""
    candidate = _bbb_mlp_fit(
        "laplace", x, y, x_val, y_val, config, subset="last_layer", hessian_structure="kron",
        prior_precision="marglik", prior_structure="layerwise", predictive="glm",
        num_epochs=config.epochs, lr=config.bbb_lr, num_draws=config.predict_draws,
    )  # fmt: skip
    post = candidate.posterior
    state = post.states[0]

    def extras(x_test, y_test, post=post, state=state):
        with post.pyro_context(), torch.no_grad():  # the MAP network itself
            logits = state.point(post.model).evaluate(state.theta, x_test).u
        probs = torch.softmax(logits, -1)
        return {
            "map_test_error": _error(probs, y_test),
            "map_test_nll": nll(probs, y_test),
            "map_test_ece": expected_calibration_error(probs, y_test),
            "map_s": post.timings["steps_s"],
            "curvature_s": post.timings["curvature_s"],
            "curvature_mb": state.nbytes / 2**20,
            "log_marginal_likelihood": post.log_marginal_likelihood,
            "prior_precision": state.prior_precision,
        }

    candidate.extras = extras
    return [candidate]


def _bbb_mlp_fit(method: str, x, y, x_val, y_val, config: MnistBBBConfig, **options):
    """One candidate: ``bbb-mlp`` under N(0, σ²) (σ = e^(−``ensemble_neg_log_sigma``), the
    ensemble members' prior) fitted by ``method`` with minibatches of ``batch_size``."""
    sigma = math.exp(-config.ensemble_neg_log_sigma)
    post = fit(
        zoo.build("bbb-mlp", width=config.width, prior=GaussianPrior(scale=sigma)), x, y,
        method=method, batch_size=config.batch_size, init_loc_fn=init_to_fan_in,
        seed=config.seed, progress_bar=False, **options,
    )  # fmt: skip

    def predict(inputs, post=post):
        return post.predict(inputs, num_samples=None).probs

    weights = np.concatenate(
        [v.mean((0, 1)).reshape(-1).numpy() for k, v in post.draws.items() if k.endswith("weight")]
    )
    setting = {"neg_log_sigma": config.ensemble_neg_log_sigma}
    return Candidate(method, setting, _error(predict(x_val), y_val), post.wall_time, predict,
                     weights, post)  # fmt: skip


def _mcdropout_candidates(method, x, y, x_val, y_val, config: MnistBBBConfig) -> list[Candidate]:
    """MC dropout (0.2 on the inputs, 0.5 on the hidden units, Srivastava et al.'s rates)
    as ``fit(method="mcdropout")``: Adam at ``bbb_lr`` for ``epochs``, T =
    ``predict_draws`` stochastic passes."""
    return [_bbb_mlp_fit(
        "mcdropout", x, y, x_val, y_val, config, num_epochs=config.epochs, lr=config.bbb_lr,
        final_lr=config.bbb_lr, dropout_rate=0.5, input_dropout_rate=0.2,
        num_draws=config.predict_draws,
    )]  # fmt: skip


def _swag_candidates(method, x, y, x_val, y_val, config: MnistBBBConfig) -> list[Candidate]:
    """SWAG / MultiSWAG at a MAP fit (an ensemble member's recipe): 10 burn-in epochs of
    SGD (momentum 0.9) annealing to ``swa_lr`` (default: 0.1 over the per-image
    curvature's largest eigenvalue at the MAP) on the per-image loss, ``swa_epochs``
    collected; K = 20, scale 0.5, ``predict_draws`` draws per member."""
    options = dict(
        num_epochs=config.epochs, lr=config.bbb_lr, swa_lr=config.swa_lr,
        swa_batch_size=config.batch_size, burn_in_epochs=10, swa_epochs=config.swa_epochs,
        num_draws=config.predict_draws, backend="jit",
    )  # fmt: skip
    if method == "multiswag":
        options.update(num_members=config.multiswag_members, chain_processes=1)
    return [_bbb_mlp_fit(method, x, y, x_val, y_val, config, **options)]


METHODS = {
    "sgd": _sgd_candidates,
    "mcdropout": _mcdropout_candidates,
    "bbb_gaussian": _bbb_candidates,
    "bbb_mixture": _bbb_candidates,
    "ensemble": _ensemble_candidates,
    "laplace": _laplace_candidates,
    "swag": _swag_candidates,
    "multiswag": _swag_candidates,
}
# the settings each method's results depend on (a kept entry needs them unchanged)
_SHARED = ("width", "batch_size", "epochs", "validation", "num_train", "seed", "max_images")
_OWN = {
    "sgd": ("sgd_lrs", "momentum"),
    "mcdropout": ("bbb_lr", "ensemble_neg_log_sigma", "predict_draws"),
    "bbb_gaussian": ("bbb_lr", "bbb_init_scale", "predict_draws", "gaussian_log_sigmas"),
    "bbb_mixture": ("bbb_lr", "bbb_init_scale", "predict_draws", "mixture_grid",
                    "variance_repeats"),
    "ensemble": ("bbb_lr", "ensemble_members", "ensemble_neg_log_sigma"),
    "laplace": ("bbb_lr", "ensemble_neg_log_sigma", "predict_draws"),
    "swag": ("bbb_lr", "ensemble_neg_log_sigma", "predict_draws", "swa_lr", "swa_epochs"),
    "multiswag": ("bbb_lr", "ensemble_neg_log_sigma", "predict_draws", "swa_lr", "swa_epochs",
                  "multiswag_members"),
}  # fmt: skip


def _kept_entries(out: Path, config: MnistBBBConfig, running: tuple[str, ...]) -> dict:
    """The entries of methods not run now from ``out/results.json``, where their settings
    (:data:`_SHARED` and the method's own) are unchanged."""
    stored = harness.load_records(out / "results.json", fresh={}, bench="mnist-bbb")
    if not stored:
        return {}
    now, before = config.record(), stored.get("config", {})
    kept = {}
    for method, entry in stored.get("methods", {}).items():
        # a method run now is measured again; one the bench no longer has (the torch
        # dropout loop, now mcdropout) is dropped
        if method in running or method not in _OWN:
            continue
        keys = (*_SHARED, *_OWN[method])
        harness.same_settings({k: before.get(k) for k in keys}, {k: now.get(k) for k in keys},
                              path=out / "results.json", what=f"method {method}")  # fmt: skip
        entry.setdefault("date", stored.get("date"))
        kept[method] = entry
    kept["_extras"] = {k: stored[k] for k in ("pruning", "local_reparameterization", "wall_s")
                       if k in stored and "bbb_mixture" not in running}  # fmt: skip
    return kept


def _weights_figure(best: dict[str, Candidate], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(-0.3, 0.3, 121)
    for method in ("sgd", "mcdropout", "bbb_mixture"):
        if method in best:
            ax.hist(best[method].weights, bins=bins, density=True, histtype="step", label=method)
    ax.set(xlabel="weight (posterior mean for BBB)", ylabel="density",
           title="Trained weights (Blundell et al. 2015, Fig. 2)")  # fmt: skip
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_mnist_bbb(
    config: MnistBBBConfig, *, out: Path, methods: tuple[str, ...] = tuple(METHODS),
    progress: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Run every method's candidates, pick on validation, score on test; write ``out/``."""
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown method(s) {sorted(unknown)}; choose from {list(METHODS)}")
    data = mnist(data_dir=config.data_dir, num_train=config.num_train, seed=config.seed)
    if config.max_images is not None:
        keep_test = config.max_images - config.num_train
        data = Split(data.x_train, data.y_train, data.x_test[:keep_test], data.y_test[:keep_test])
    x, y, x_val, y_val = _carve(data, config)
    out.mkdir(parents=True, exist_ok=True)
    kept = _kept_entries(out, config, methods)
    extras = kept.pop("_extras", {})
    start = time.perf_counter()
    best: dict[str, Candidate] = {}
    report: dict[str, Any] = {"methods": dict(kept), **extras}
    for method in tqdm(methods, desc="mnist-bbb", disable=not progress):
        candidates = METHODS[method](method, x, y, x_val, y_val, config)
        chosen = min(candidates, key=lambda c: c.validation_error)
        best[method] = chosen
        test_probs = chosen.predict(data.x_test)
        report["methods"][method] = {
            "chosen": chosen.setting,
            "test_error": _error(test_probs, data.y_test),
            "test_nll": nll(test_probs, data.y_test),
            "test_ece": expected_calibration_error(test_probs, data.y_test),
            "date": date.today().isoformat(),
            "validation_errors": [
                {"setting": c.setting, "validation_error": c.validation_error, "fit_s": c.fit_s}
                for c in candidates
            ],
            "fit_s": sum(c.fit_s for c in candidates),
        }
        if chosen.extras is not None:
            report["methods"][method].update(chosen.extras(data.x_test, data.y_test))
    if "bbb_mixture" in best:
        post = best["bbb_mixture"].posterior
        report["pruning"] = [
            {"fraction": f, "test_error": _error(
                prune_by_snr(post, f).predict(data.x_test, num_samples=None).probs, data.y_test)}
            for f in PRUNE_FRACTIONS
        ]  # fmt: skip
        batch = slice(0, config.batch_size)
        with post.pyro_context():
            plain = gradient_variance(post.model, post.guide, x[batch], y[batch], local=False,
                                      num_repeats=config.variance_repeats)  # fmt: skip
            local = gradient_variance(post.model, post.guide, x[batch], y[batch], local=True,
                                      num_repeats=config.variance_repeats)  # fmt: skip
        report["local_reparameterization"] = {
            "gradient_variance_plain": plain,
            "gradient_variance_local": local,
            "ratio": local / plain,
            "repeats": config.variance_repeats,
            "batch": config.batch_size,
        }
    if {"sgd", "mcdropout", "bbb_mixture"} <= set(best):  # else the figure of the last full run
        _weights_figure(best, out / "weights.png")
    report["methods"] = {m: report["methods"][m] for m in METHODS if m in report["methods"]}
    report.update(
        config=config.record(),
        wall_s=report.get("wall_s", 0.0) + time.perf_counter() - start,
        date=date.today().isoformat(),
        machine=harness.machine(),
        n_fit=len(x),
        n_validation=len(x_val),
        n_test=len(data.x_test),
    )
    harness.save(out, report, format_markdown(report))
    return report


# "dropout": the row measured before the baseline moved onto fit(method="mcdropout")
PAPER = {"sgd": 1.88, "dropout": 1.36, "mcdropout": 1.36, "bbb_gaussian": 2.04, "bbb_mixture": 1.32}


def _percent(entry: dict[str, Any], key: str) -> str:
    return f"{100 * entry[key]:.2f} %" if key in entry else "—"


def format_markdown(report: dict[str, Any]) -> str:
    """The test error table, the pruning table and the variance ratio."""
    lines = [
        f"# MNIST, Bayes by Backprop ({report['date']}, {report['machine']})",
        "",
        f"{report['n_fit']} training images, {report['n_validation']} validation, "
        f"{report['n_test']} test; {report['config']['epochs']} epochs, two hidden layers of "
        f"{report['config']['width']}. Paper: Blundell et al. 2015, Table 1, full MNIST, 2 × 1200.",
        "",
        *harness.table_header(
            "method",
            "chosen on validation",
            "test error",
            "test NLL",
            "test ECE",
            "fit time",
            "measured",
            "paper error (full MNIST)",
        ),
    ]
    for method, entry in report["methods"].items():
        setting = ", ".join(f"{k}={v:g}" for k, v in entry["chosen"].items())
        lines.append(harness.table_row(
            method, setting, _percent(entry, "test_error"),
            f"{entry['test_nll']:.3f}" if "test_nll" in entry else "—",
            _percent(entry, "test_ece"), f"{entry['fit_s'] / 60:.1f} min",
            entry.get("date", report["date"]),
            f"{PAPER[method]:.2f} %" if method in PAPER else "—",
        ))  # fmt: skip
    lines += [
        "",
        "Fit time: every candidate of the method (validation selection included). NLL and "
        "ECE (15 bins) were not recorded before 2026-11-27 (—); `ensemble`: "
        f"{report['config'].get('ensemble_members', 5)} MAP members of `bbb-mlp` under "
        "N(0, σ²), σ = e^(−neg_log_sigma), no adversarial training.",
    ]
    if "laplace" in report["methods"] and "curvature_s" in report["methods"]["laplace"]:
        entry = report["methods"]["laplace"]
        precisions = ", ".join(f"{k} {v:.3g}" for k, v in entry["prior_precision"].items())
        lines += [
            "",
            "`laplace`: last-layer KFAC Laplace at a MAP fit of `bbb-mlp` (one ensemble "
            "member's recipe), its prior precision tuned by the Laplace evidence "
            f"({precisions}), GLM predictive with the probit approximation. Its MAP network "
            f"alone: test error {_percent(entry, 'map_test_error')}, NLL "
            f"{entry['map_test_nll']:.3f}, ECE {_percent(entry, 'map_test_ece')}. The MAP "
            f"fit took {entry['map_s'] / 60:.1f} min; the curvature (KFAC factors, their "
            f"eigendecompositions and the evidence maximisation) {entry['curvature_s']:.1f} s "
            f"and holds {entry['curvature_mb']:.1f} MB.",
        ]
    if "pruning" in report:
        lines += ["", *harness.table_header("weights removed by SNR (bbb_mixture)", "test error")]
        lines += [
            harness.table_row(f"{100 * p['fraction']:.0f} %", f"{100 * p['test_error']:.2f} %")
            for p in report["pruning"]
        ]
    if "local_reparameterization" in report:
        lr = report["local_reparameterization"]
        lines += [
            "",
            f"Local reparameterization: the gradient of the data term −log p(y | w) has "
            f"{lr['ratio']:.3f} × the variance it has with sampled weights (mean over the "
            f"guide's parameters; {lr['repeats']} single-draw gradients on the same batch of "
            f"{lr['batch']}, at the trained bbb_mixture posterior).",
        ]
    lines.append(f"\nTotal wall time {report['wall_s'] / 60:.1f} min.")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = harness.command(
        "mnist-bbb",
        "Bayes by Backprop vs SGD and dropout on MNIST, with SNR pruning",
        data="mnist/",
    )
    parser.add_argument(
        "--methods",
        default="sgd,mcdropout,bbb_gaussian,bbb_mixture,ensemble,laplace,swag,multiswag",
    )
    parser.add_argument("--epochs", type=int, default=None, help="epochs per candidate")
    return parser


def _command(args: argparse.Namespace) -> int:
    options: dict[str, Any] = {"data_dir": args.data_dir}
    if args.epochs is not None:
        options["epochs"] = args.epochs
    config = MnistBBBConfig.tiny(**options) if args.quick else MnistBBBConfig(**options)
    methods = tuple(harness.names(args.methods))
    report = run_mnist_bbb(config, out=Path(args.out), methods=methods,
                           progress=not args.no_progress)  # fmt: skip
    print(format_markdown(report))
    print(f"written to {args.out}/results.json, results.md and weights.png")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``pyro-bnn bench mnist-bbb …`` / ``python -m benchmarks.mnist_bbb …``."""
    return harness.main(build_parser(), _command, argv)
