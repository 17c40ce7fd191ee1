"""SVI with autoguides: ``map``, ``meanfield``, ``multiplicative``, ``dwp``, ``lowrank``,
``fullrank``."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import (
    AutoDelta,
    AutoDiagonalNormal,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    init_to_sample,
)
from pyro.optim import ClippedAdam
from tqdm import tqdm

from pyro_bnn.guides import AutoImplicitPriorNormal, AutoMultiplicativeNormal
from pyro_bnn.infer import elbo
from pyro_bnn.infer.kl_weighting import KL_WEIGHTINGS, KLWeight, kl_weights
from pyro_bnn.infer.options import Options
from pyro_bnn.likelihoods import ScaleDataPlate
from pyro_bnn.local_reparam import LocalReparameterization
from pyro_bnn.posterior import Posterior
from pyro_bnn.potential import flat_potential

__all__ = [
    "GUIDES",
    "GaussianGuideOptions",
    "ImplicitPriorOptions",
    "LowRankOptions",
    "MeanFieldOptions",
    "SVIOptions",
    "run_svi",
]


@dataclass(frozen=True, kw_only=True)
class SVIOptions(Options):
    """``num_steps`` or ``num_epochs`` (default 1000 steps); ``batch_size`` None = full batch;
    Adam learning rate ``lr`` decayed geometrically to ``final_lr`` (default: no decay);
    ``num_particles`` ELBO samples per step, in one pass with ``vectorize_particles`` (the
    zoo's layers support it; ``Trace_ELBO`` path only, the potential ELBO loops over
    particles); ``num_draws`` guide draws kept in the Posterior.
    ``kl_weighting``: how an epoch's minibatches share the KL term, ``"uniform"`` (1/M,
    the plain minibatch ELBO) or ``"blundell"`` (2^(M−i)/(2^M − 1); see
    :mod:`pyro_bnn.infer.kl_weighting`; runs ``Trace_ELBO``).
    ``backend``: ``"jit"`` or ``"inductor"`` evaluate the ELBO of every guide here through
    the model's flat compiled potential (:class:`~pyro_bnn.infer.elbo.PotentialELBO`,
    :class:`~pyro_bnn.potential.Potential`) when every latent is global and the model has
    no deterministic parameters; ``"pyro"`` (and every other case) uses ``Trace_ELBO``."""

    num_steps: int | None = None
    num_epochs: int | None = None
    batch_size: int | None = None
    lr: float = 0.01
    final_lr: float | None = None
    num_particles: int = 1
    vectorize_particles: bool = False
    backend: str = "jit"
    num_draws: int = 1000
    init_loc_fn: Callable = init_to_sample
    kl_weighting: str = "uniform"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_steps is not None and self.num_epochs is not None:
            raise ValueError("give num_steps or num_epochs, not both")
        if self.kl_weighting not in KL_WEIGHTINGS:
            raise ValueError(
                f"unknown kl_weighting {self.kl_weighting!r}; choose one of {KL_WEIGHTINGS}"
            )
        self.check_choice("backend", ("pyro", "jit", "inductor"))

    @property
    def plain_elbo(self) -> bool:
        """Whether the ELBO is the plain minibatch ELBO (the compiled potential may run it)."""
        return self.kl_weighting == "uniform"


@dataclass(frozen=True, kw_only=True)
class GaussianGuideOptions(SVIOptions):
    """``init_scale``: initial standard deviation of the Gaussian guide."""

    init_scale: float = 0.01


@dataclass(frozen=True, kw_only=True)
class MeanFieldOptions(GaussianGuideOptions):
    """``local_reparameterization``: draw Linear and Conv2d outputs from the guide's moments
    (:mod:`pyro_bnn.local_reparam`) during training."""

    local_reparameterization: bool = False

    @property
    def plain_elbo(self) -> bool:
        return super().plain_elbo and not self.local_reparameterization


@dataclass(frozen=True, kw_only=True)
class ImplicitPriorOptions(MeanFieldOptions):
    """Options of ``dwp``, the guide of an implicit prior
    (:class:`~pyro_bnn.guides.AutoImplicitPriorNormal`), with the defaults of Atanov et al.
    (2019): weights started from prior draws, log-variance −10 (``init_scale`` e⁻⁵), local
    reparameterization on."""

    init_scale: float = math.exp(-5)
    local_reparameterization: bool = True

    @property
    def plain_elbo(self) -> bool:
        return False  # the reverse model's sites are not in the model's flat potential


@dataclass(frozen=True, kw_only=True)
class LowRankOptions(GaussianGuideOptions):
    """``rank`` of the covariance factor (default: Pyro's, about sqrt(#latents))."""

    rank: int | None = None


def _map_guide(model: Callable, o: SVIOptions):
    return AutoDelta(model, init_loc_fn=o.init_loc_fn)


def _meanfield_guide(model: Callable, o: MeanFieldOptions):
    # the fully factorised Gaussian with one flat loc and scale vector: the same family
    # as AutoNormal, but one reparameterised draw per step instead of one per site
    return AutoDiagonalNormal(model, init_loc_fn=o.init_loc_fn, init_scale=o.init_scale)


def _multiplicative_guide(model: Callable, o: MeanFieldOptions):
    return AutoMultiplicativeNormal(model, init_loc_fn=o.init_loc_fn, init_scale=o.init_scale)


def _implicit_prior_guide(model: Callable, o: ImplicitPriorOptions):
    return AutoImplicitPriorNormal(model, init_loc_fn=o.init_loc_fn, init_scale=o.init_scale)


def _lowrank_guide(model: Callable, o: LowRankOptions):
    return AutoLowRankMultivariateNormal(
        model, init_loc_fn=o.init_loc_fn, init_scale=o.init_scale, rank=o.rank
    )


def _fullrank_guide(model: Callable, o: GaussianGuideOptions):
    return AutoMultivariateNormal(model, init_loc_fn=o.init_loc_fn, init_scale=o.init_scale)


# method -> (options type, guide builder)
GUIDES: dict[str, tuple[type[SVIOptions], Callable]] = {
    "map": (SVIOptions, _map_guide),
    "meanfield": (MeanFieldOptions, _meanfield_guide),
    "multiplicative": (MeanFieldOptions, _multiplicative_guide),
    "dwp": (ImplicitPriorOptions, _implicit_prior_guide),
    "lowrank": (LowRankOptions, _lowrank_guide),
    "fullrank": (GaussianGuideOptions, _fullrank_guide),
}


def _num_batches(num_rows: int, batch_size: int | None) -> int:
    return 1 if batch_size is None else max(num_rows // batch_size, 1)


def _minibatches(
    num_rows: int, batch_size: int | None
) -> Iterator[tuple[torch.Tensor | None, int]]:
    """(row index or None for the full batch, position in the epoch), forever."""
    while True:
        if batch_size is None or batch_size >= num_rows:
            yield None, 0
            continue
        order = torch.randperm(num_rows)
        for i, start in enumerate(range(0, num_rows - batch_size + 1, batch_size)):
            yield order[start : start + batch_size], i


def _num_steps(o: SVIOptions, num_rows: int) -> int:
    if o.num_epochs is None:
        return o.num_steps or 1000
    return o.num_epochs * _num_batches(num_rows, o.batch_size)


def _guide_draws(guide, x, y, num_draws: int) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        samples = [guide(x, y) for _ in range(num_draws)]
    return {name: torch.stack([s[name].detach() for s in samples])[None] for name in samples[0]}


def _loss(scaled_model, guide, x, y, *, method: str, options: SVIOptions):
    """The compiled potential ELBO where it applies, else Pyro's Trace_ELBO."""
    if options.backend != "pyro" and options.plain_elbo:
        guide(x, y)  # build the guide's prototype and parameters
        potential = flat_potential(scaled_model, x, y, backend=options.backend)
        if potential is not None and elbo.supports(guide, potential):
            rows = options.batch_size or len(x)
            potential(torch.zeros(potential.layout.size), x[:rows], y[:rows])  # compile now
            return elbo.PotentialELBO(potential, num_particles=options.num_particles)
    return Trace_ELBO(
        num_particles=options.num_particles,
        vectorize_particles=options.vectorize_particles,
        max_plate_nesting=1 if options.vectorize_particles else float("inf"),
    )


def run_svi(
    model: Callable,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    method: str,
    options: SVIOptions,
    progress_bar: bool,
) -> Posterior:
    """Fit ``method``'s guide by SVI and return its draws as a one-chain Posterior."""
    scaled_model = ScaleDataPlate(len(x))(model)
    guide = GUIDES[method][1](scaled_model, options)
    num_steps = _num_steps(options, len(x))
    decay = 1.0 if options.final_lr is None else (options.final_lr / options.lr) ** (1 / num_steps)
    loss_fn = _loss(scaled_model, guide, x, y, method=method, options=options)
    train_model, train_guide = scaled_model, guide
    if getattr(options, "local_reparameterization", False):
        train_model = LocalReparameterization(guide)(train_model)
    # the KL (every site outside the data plate) weighted M·π_i on minibatch i of M
    kl = KLWeight()
    num_batches = _num_batches(len(x), options.batch_size)
    kl_scale = (num_batches * kl_weights(options.kl_weighting, num_batches)).tolist()
    if options.kl_weighting != "uniform":
        train_model, train_guide = kl(train_model), kl(guide)
    svi = SVI(train_model, train_guide, ClippedAdam({"lr": options.lr, "lrd": decay}), loss_fn)
    losses: list[float] = []
    batches = _minibatches(len(x), options.batch_size)
    loop_start = time.perf_counter()
    with tqdm(total=num_steps, desc=method, disable=not progress_bar) as bar:
        for step in range(num_steps):
            index, position = next(batches)
            kl.weight = kl_scale[position]
            loss = svi.step(x, y) if index is None else svi.step(x[index], y[index])
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"the {method} loss became {loss} at step {step}; try a smaller lr"
                )
            losses.append(loss)
            bar.update()
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
    loop_s = time.perf_counter() - loop_start
    num_draws = 1 if method == "map" else options.num_draws
    return Posterior(
        model=model,
        method=method,
        draws=_guide_draws(guide, x, y, num_draws),
        x_train=x,
        y_train=y,
        guide=guide,
        losses=losses,
        timings={"steps_s": loop_s, "steps": num_steps},
    )
