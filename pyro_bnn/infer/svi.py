"""SVI with autoguides, one chain at a time: ``map``, ``ensemble``, ``meanfield``,
``multiplicative``, ``dwp``, ``lowrank``, ``fullrank``.

A chain is one optimisation from its own seed (initialisation and minibatch order), so
``num_chains`` independent fits of any of them make an ensemble of that method; the
``ensemble`` method is Lakshminarayanan et al.'s (2017) deep ensemble: ``num_members`` MAP
fits, optionally with adversarial training.

Example:
    >>> import torch
    >>> from pyro_bnn import fit, zoo
    >>> model = zoo.build("bayesian-linear-regression", in_features=1, noise_scale=0.1)
    >>> x = torch.linspace(-1, 1, 30)[:, None]
    >>> post = fit(model, x, 3 * x[:, 0], method="ensemble", num_members=3, num_steps=200,
    ...            lr=0.05, chain_processes=1, progress_bar=False, seed=0)
    >>> post.draws["linear.weight"].shape
    torch.Size([3, 1, 1, 1])
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, replace
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import (
    AutoDelta,
    AutoDiagonalNormal,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    init_to_sample,
    init_to_value,
)
from pyro.optim import ClippedAdam
from pyro.poutine.messenger import Messenger
from tqdm import tqdm

from pyro_bnn import distributed
from pyro_bnn.diagnostics import data_scale, loss_diagnostics, not_finite_at_start
from pyro_bnn.distributed import shard_rows_index
from pyro_bnn.dwp import REVERSE_MODEL, init_to_decoder_mean
from pyro_bnn.guides import AutoImplicitPriorNormal, AutoMultiplicativeNormal
from pyro_bnn.infer import compiled_step, elbo
from pyro_bnn.infer.chains import Chain
from pyro_bnn.infer.kl_weighting import KL_WEIGHTINGS, KLWeight, kl_weights
from pyro_bnn.infer.options import Options
from pyro_bnn.init import trace_at_support_zero
from pyro_bnn.likelihoods import OBS_SITE, ScaleDataPlate
from pyro_bnn.local_reparam import LocalReparameterization
from pyro_bnn.potential import flat_potential
from pyro_bnn.validation import left_support, short_error

__all__ = [
    "EnsembleOptions",
    "GaussianGuideOptions",
    "ImplicitPriorOptions",
    "LowRankOptions",
    "MeanFieldOptions",
    "SVIOptions",
    "VariationalOptions",
    "epoch_losses",
    "fit_map",
    "fullrank_guide",
    "implicit_prior_guide",
    "lowrank_guide",
    "map_guide",
    "meanfield_guide",
    "multiplicative_guide",
    "run_svi_chain",
]


@dataclass(frozen=True, kw_only=True)
class SVIOptions(Options):
    """Options of ``map`` (and the base of every SVI method).

    ``num_steps`` or ``num_epochs`` (default: a budget that grows with the data,
    :func:`default_num_steps`); ``batch_size`` None = full batch; Adam learning rate
    ``lr`` decayed to ``final_lr`` (default ``lr``/100; give ``final_lr=lr`` for a constant
    rate), so that the last steps settle instead of jittering, geometrically or, with
    ``lr_decay="linear"``, linearly (``final_lr=0`` allowed there, as Atanov et al.);
    ``num_particles`` ELBO samples per step, in one pass with ``vectorize_particles`` (the
    zoo's layers support it; ``Trace_ELBO`` path only, the potential ELBO loops over
    particles).
    ``kl_weighting``: how an epoch's minibatches share the KL term, ``"uniform"`` (1/M,
    the plain minibatch ELBO) or ``"blundell"`` (2^(M−i)/(2^M − 1); see
    :mod:`pyro_bnn.infer.kl_weighting`; runs ``Trace_ELBO``).
    ``backend``: ``"jit"`` or ``"inductor"`` evaluate the ELBO of every guide here through
    the model's flat compiled potential (:class:`~pyro_bnn.infer.elbo.PotentialELBO`,
    :class:`~pyro_bnn.potential.Potential`) when every latent is global and the model has
    no deterministic parameters, and run each step (that ELBO, or ``dvi``'s deterministic
    one, its gradient and the update) as one compiled graph
    (:mod:`~pyro_bnn.infer.compiled_step`); ``"pyro"`` (and every other case) uses
    ``Trace_ELBO`` (``dvi``: its own ELBO) and Pyro's ``SVI.step``."""

    num_steps: int | None = None
    num_epochs: int | None = None
    batch_size: int | None = None
    lr: float = 0.01
    final_lr: float | None = None
    lr_decay: str = "geometric"
    num_particles: int = 1
    vectorize_particles: bool = False
    backend: str = "jit"
    init_loc_fn: Callable = init_to_sample
    kl_weighting: str = "uniform"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_steps is not None and self.num_epochs is not None:
            raise ValueError("give num_steps or num_epochs, not both")
        self.check_choice("kl_weighting", KL_WEIGHTINGS)
        self.check_choice("backend", ("pyro", "jit", "inductor"))
        self.check_choice("lr_decay", LR_DECAYS)
        if self.final_lr == 0 and self.lr_decay != "linear":
            raise ValueError(
                "final_lr=0 needs lr_decay='linear' (a geometric decay to 0 is not defined)"
            )

    @classmethod
    def allow_zero(cls) -> frozenset[str]:
        return super().allow_zero() | {"final_lr"}

    @property
    def plain_elbo(self) -> bool:
        """Whether the ELBO is the plain minibatch ELBO (the compiled potential may run it)."""
        return self.kl_weighting == "uniform"

    @property
    def draws_per_chain(self) -> int:
        """Guide draws kept per chain (one: the point estimate)."""
        return 1

    @property
    def adversarial_epsilon(self) -> float | None:
        return None


@dataclass(frozen=True, kw_only=True)
class EnsembleOptions(SVIOptions):
    """Options of ``ensemble``: ``num_members`` MAP fits (chains), each from its own
    initialisation and minibatch order. ``adversarial``: train each member on every batch
    and on its fast-gradient-sign perturbation x + ε·sign(∇ₓ −log p(y | x, θ)), with ε
    ``epsilon`` times each input feature's range in the training data (Lakshminarayanan
    et al. use 0.01); the two halves share the likelihood's weight."""

    num_members: int = 5
    adversarial: bool = False
    epsilon: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_chains != 1:
            raise ValueError("an ensemble's chains are its members: give num_members")

    @property
    def chains(self) -> int:
        return self.num_members

    @property
    def adversarial_epsilon(self) -> float | None:
        return self.epsilon if self.adversarial else None


INITS = ("sample", "map")


@dataclass(frozen=True, kw_only=True)
class VariationalOptions(SVIOptions):
    """``num_draws`` guide draws kept per chain in the Posterior.

    ``init="map"`` starts the guide's means at a MAP fit of the same model (same schedule
    options), instead of at ``init_loc_fn``: a warm start.

    ``kl_weight`` β scales the KL term (every site outside the data plate): the tempered
    objective E_q[log p(y | w)] − β KL(q ‖ p). With β ≠ 1 it no longer targets the
    posterior but the distribution ∝ p(y | w)^(1/β) p(w) (for Gaussian q, roughly the
    posterior of a β-times-smaller prior and of data counted 1/β times). Never the default;
    it is recorded in ``posterior.options`` and the ArviZ attributes."""

    num_draws: int = 1000
    init: str = "sample"
    kl_weight: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_choice("init", INITS)

    @property
    def draws_per_chain(self) -> int:
        return self.num_draws

    @property
    def plain_elbo(self) -> bool:
        return super().plain_elbo and self.kl_weight == 1.0


@dataclass(frozen=True, kw_only=True)
class GaussianGuideOptions(VariationalOptions):
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
    (2019)'s code: kernel means started at the decoder's mean for a draw of the latents
    (:func:`~pyro_bnn.dwp.init_to_decoder_mean`), log-variance −10 (``init_scale`` e⁻⁵),
    local reparameterization on, and the prior's encoder as the reverse model r(z | w),
    frozen (``train_reverse_model=True`` trains a copy of it)."""

    init_scale: float = math.exp(-5)
    local_reparameterization: bool = True
    init_loc_fn: Callable = init_to_decoder_mean
    train_reverse_model: bool = False

    @property
    def plain_elbo(self) -> bool:
        return False  # the reverse model's sites are not in the model's flat potential


@dataclass(frozen=True, kw_only=True)
class LowRankOptions(GaussianGuideOptions):
    """``rank`` of the covariance factor (default: Pyro's, about sqrt(#latents))."""

    rank: int | None = None


class _CountLayerOutputs(Messenger):
    """Counts the layer outputs that go through :func:`pyro_bnn.layers.layer_output`
    (what local reparameterization draws)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def _pyro_layer_output(self, msg: dict) -> None:
        self.calls += 1


def _two_particles(model: Callable) -> Callable:
    """``model`` inside a plate of two particles left of the data plate, as a vectorised
    ELBO runs it (the plate inside the caller's handlers, so it broadcasts first)."""

    def particles(*args, **kwargs):
        with pyro.plate("_particles", 2, dim=-2):
            return model(*args, **kwargs)

    return particles


def precheck(model: Callable, x: torch.Tensor, y: torch.Tensor, options: SVIOptions) -> None:
    """Refuse, before any step, what the options ask of a model that cannot do it:
    local reparameterization without layers that route their output through
    ``layer_output``, vectorised particles through layers that take one weight draw, and
    ``dwp`` without an implicit prior."""
    local = getattr(options, "local_reparameterization", False)
    if local and options.vectorize_particles:
        raise ValueError(
            "local_reparameterization draws one layer output per row and runs one particle "
            "at a time: it cannot be combined with vectorize_particles=True"
        )
    with _CountLayerOutputs() as counted:
        trace = trace_at_support_zero(model, x[:2], y[:2])
    if isinstance(options, ImplicitPriorOptions) and not any(
        REVERSE_MODEL in (site.get("infer") or {}) for site in trace.nodes.values()
    ):
        raise ValueError(
            "method 'dwp' needs a model with an implicit prior (latents annotated with a "
            "reverse model, such as pyro_bnn.dwp.DeepWeightPrior's); this model has none: "
            "use meanfield"
        )
    if local and counted.calls == 0:
        raise ValueError(
            "local_reparameterization=True needs Bayesian layers whose output goes through "
            "pyro_bnn.layers.layer_output (pyro_bnn.layers.Linear or Conv2d, as in the zoo "
            "and bayesianize); this model has none, so nothing would be reparameterised"
        )
    if options.vectorize_particles:
        rows = min(len(x), 2)
        try:
            particles = trace_at_support_zero(_two_particles(model), x[:rows], y[:rows])
            shape = tuple(particles.nodes[OBS_SITE]["fn"].batch_shape)
        except (RuntimeError, ValueError) as error:
            shape, reason = None, short_error(error)
        else:
            reason = f"its '{OBS_SITE}' site had batch shape {shape}, not (2, {rows})"
        if shape != (2, rows):
            raise ValueError(
                "vectorize_particles=True needs layers that take a batch of weight draws "
                "(pyro_bnn.layers.Linear, as in the zoo and bayesianize); with two particles "
                f"this model failed: {reason}. Use vectorize_particles=False"
            )


def map_guide(model: Callable, o: SVIOptions):
    return AutoDelta(model, init_loc_fn=o.init_loc_fn)


def meanfield_guide(model: Callable, o: MeanFieldOptions):
    # the fully factorised Gaussian with one flat loc and scale vector: the same family
    # as AutoNormal, but one reparameterised draw per step instead of one per site
    return AutoDiagonalNormal(model, init_loc_fn=o.init_loc_fn, init_scale=o.init_scale)


def multiplicative_guide(model: Callable, o: MeanFieldOptions):
    return AutoMultiplicativeNormal(model, init_loc_fn=o.init_loc_fn, init_scale=o.init_scale)


def implicit_prior_guide(model: Callable, o: ImplicitPriorOptions):
    return AutoImplicitPriorNormal(
        model,
        init_loc_fn=o.init_loc_fn,
        init_scale=o.init_scale,
        train_reverse_model=o.train_reverse_model,
    )


def lowrank_guide(model: Callable, o: LowRankOptions):
    return AutoLowRankMultivariateNormal(
        model, init_loc_fn=o.init_loc_fn, init_scale=o.init_scale, rank=o.rank
    )


def fullrank_guide(model: Callable, o: GaussianGuideOptions):
    return AutoMultivariateNormal(model, init_loc_fn=o.init_loc_fn, init_scale=o.init_scale)


def _num_batches(num_rows: int, batch_size: int | None) -> int:
    return 1 if batch_size is None else max(num_rows // batch_size, 1)


def _minibatches(
    num_rows: int, batch_size: int | None, *, shards: int = 1, shard: int | None = None
) -> Iterator[tuple[torch.Tensor | None, int]]:
    """(row index or None for the full batch, position in the epoch), forever.

    With ``shards`` equal shards of ``num_rows`` rows each (data-parallel SVI), every
    shard gives ``batch_size / shards`` rows at the same positions of one permutation: the
    rows of shard ``shard`` (indices into it), or with ``shard=None`` the global minibatch
    (indices into the shards concatenated). One shard is the plain epoch of minibatches."""
    local = None if batch_size is None else batch_size // shards
    while True:
        if local is None or local >= num_rows:
            yield None, 0
            continue
        order = torch.randperm(num_rows)
        for i, start in enumerate(range(0, num_rows - local + 1, local)):
            rows = order[start : start + local]
            yield shard_rows_index(rows, shard_rows=num_rows, shards=shards, shard=shard), i


DEFAULT_STEPS = 20_000
DEFAULT_EPOCHS = 50
DEFAULT_DECAY = 0.01  # final_lr = lr × this unless given
LR_DECAYS = ("geometric", "linear")


def learning_rates(options: SVIOptions, num_steps: int) -> torch.Tensor:
    """The learning rate of each of ``num_steps`` steps under ``options``' schedule:
    linear from ``lr`` at the first step (as Atanov et al.'s per-epoch rates), geometric
    from lr·d at the first to ``final_lr`` at the last (``ClippedAdam``'s ``lrd`` d, which
    Pyro applies before each step)."""
    final_lr = options.lr * DEFAULT_DECAY if options.final_lr is None else options.final_lr
    t = torch.arange(num_steps, dtype=torch.float64) / num_steps
    if options.lr_decay == "linear":
        return options.lr + (final_lr - options.lr) * t
    return options.lr * (final_lr / options.lr) ** (t + 1 / num_steps)


def default_num_steps(num_rows: int, batch_size: int | None) -> int:
    """The default budget: 20,000 steps, or 50 epochs where that is more (minibatches).

    Example:
        >>> default_num_steps(80, None), default_num_steps(100_000, 100)
        (20000, 50000)
    """
    return max(DEFAULT_STEPS, DEFAULT_EPOCHS * _num_batches(num_rows, batch_size))


def _num_steps(o: SVIOptions, num_rows: int) -> int:
    if o.num_epochs is not None:
        return o.num_epochs * _num_batches(num_rows, o.batch_size)
    return o.num_steps or default_num_steps(num_rows, o.batch_size)


def _guide_draws(guide, x, y, num_draws: int) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        samples = [guide(x, y) for _ in range(num_draws)]
    return {name: torch.stack([s[name].detach() for s in samples])[None] for name in samples[0]}


def _loss(scaled_model, guide, x, y, *, options: SVIOptions, shared: dict[str, Any]):
    """The compiled potential ELBO where it applies, else Pyro's Trace_ELBO. The potential
    is compiled once per process and shared by its chains."""
    # vectorised particles are Trace_ELBO's: the potential ELBO loops over particles
    if options.backend != "pyro" and options.plain_elbo and not options.vectorize_particles:
        guide(x, y)  # build the guide's prototype and parameters
        if "potential" not in shared:
            shared["potential"] = flat_potential(scaled_model, x, y, backend=options.backend)
        potential = shared["potential"]
        if potential is not None and elbo.supports(guide, potential):
            return elbo.PotentialELBO(potential, num_particles=options.num_particles)
    return Trace_ELBO(
        num_particles=options.num_particles,
        vectorize_particles=options.vectorize_particles,
        max_plate_nesting=1 if options.vectorize_particles else float("inf"),
    )


class AdversarialLoss:
    """``loss`` on a batch and on its fast-gradient-sign perturbation (Goodfellow et al.
    2015; Lakshminarayanan et al. 2017): x' = x + ε·sign(∇ₓ −log p(y | x, θ)) at the
    guide's current draw θ, ``epsilon`` per input feature. The two copies of the batch go
    through the model together, so the data plate's scaling gives each half weight ½."""

    def __init__(self, loss: Callable, epsilon: torch.Tensor) -> None:
        self.loss, self.epsilon = loss, epsilon

    def perturb(self, model, guide, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        inputs = x.detach().requires_grad_(True)
        if isinstance(self.loss, elbo.PotentialELBO):  # the compiled potential: U's x-gradient
            with torch.no_grad():
                theta, _ = self.loss._sample(guide)
            nll = self.loss.potential(theta, inputs, y)  # the prior terms do not involve x
        else:
            with poutine.block():
                guide_trace = poutine.trace(guide).get_trace(inputs, y)
                replayed = poutine.replay(model, trace=guide_trace)
                site = poutine.trace(replayed).get_trace(inputs, y).nodes[OBS_SITE]
            nll = -site["fn"].log_prob(site["value"]).sum()
        (grad,) = torch.autograd.grad(nll, inputs)
        return (x + self.epsilon * grad.sign()).detach()

    def __call__(self, model, guide, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        adversarial = self.perturb(model, guide, x, y)
        return self.loss(model, guide, torch.cat([x, adversarial]), torch.cat([y, y]))


def _fit_guide(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    name: str,
    guide,
    options: SVIOptions,
    shared: dict[str, Any],
    progress_bar: bool,
    loss_fn: Callable | None = None,
    timings: dict[str, float] | None = None,
) -> list[float]:
    """Run SVI on ``guide`` with ``loss_fn`` (default: :func:`_loss`); the loss history.
    ``timings``, if given, gets ``setup_s`` (building and compiling the loss and the step)
    and ``steps_s`` (the loop of steps alone)."""
    began = time.perf_counter()
    scaled_model = guide.model
    plan = distributed.active()
    rows = distributed.global_rows(len(x))
    num_steps = _num_steps(options, rows)
    rates = learning_rates(options, num_steps).tolist()
    custom_loss = loss_fn is not None  # reads the KL weight from the model's sites alone
    if loss_fn is None:
        loss_fn = _loss(scaled_model, guide, x, y, options=options, shared=shared)
    else:
        guide(x, y)  # its start, before the first minibatch, as _loss builds it
    potential_elbo = loss_fn if isinstance(loss_fn, elbo.PotentialELBO) else None
    if options.adversarial_epsilon is not None:
        feature_range = (x.amax(0) - x.amin(0)).clamp_min(0)
        plain = loss_fn.differentiable_loss if isinstance(loss_fn, Trace_ELBO) else loss_fn
        loss_fn = AdversarialLoss(plain, options.adversarial_epsilon * feature_range)
    train_model, train_guide = scaled_model, guide
    if getattr(options, "local_reparameterization", False):
        train_model = LocalReparameterization(guide)(train_model)
    # the KL (every site outside the data plate) weighted M·π_i on minibatch i of M
    kl = KLWeight()
    num_batches = _num_batches(rows, options.batch_size)
    beta = getattr(options, "kl_weight", 1.0)
    kl_scale = (beta * num_batches * kl_weights(options.kl_weighting, num_batches)).tolist()
    if options.kl_weighting != "uniform" or beta != 1.0:
        train_model, train_guide = kl(train_model), (guide if custom_loss else kl(guide))
    # Pyro makes each torch optimiser inside the first step, with this rate: the schedule's
    optimizer = ClippedAdam({"lr": rates[0] if rates else options.lr})
    svi = SVI(train_model, train_guide, optimizer, loss_fn)
    plain = train_model is scaled_model
    compiled = _compiled_step(guide, loss_fn, x, y, options=options, plain=plain,
                              distributed=plan is not None, shared=shared)  # fmt: skip
    if compiled is None and potential_elbo is not None:  # compile it before the steps
        _compile_potential(potential_elbo.potential, x, y, options=options)
    losses: list[float] = []
    batches = distributed.minibatches(_minibatches, len(x), options.batch_size)
    loop_began = time.perf_counter()
    with tqdm(total=num_steps, desc=name, disable=not progress_bar) as bar:
        for step in range(num_steps):
            index, position = next(batches)
            kl.weight = kl_scale[position]
            _set_learning_rate(optimizer, rates[step])
            try:
                batch = (x, y) if index is None else (x[index], y[index])
                if compiled is not None:
                    loss = compiled(*batch, lr=rates[step])
                elif plan is None:
                    loss = svi.step(*batch)
                else:
                    loss = _averaged_step(svi, plan, batch)
            except ValueError as error:  # Pyro's check of a distribution's parameters
                if step == 0 or not left_support(error):
                    raise
                raise FloatingPointError(
                    f"the {name} fit diverged at step {step}: a distribution's parameter left "
                    f"its support ({short_error(error)[:120]}...); "
                    f"{_remedy(options, x, y, step=step)}"
                ) from None
            except torch.linalg.LinAlgError as error:  # a low-rank or full-rank guide's
                raise FloatingPointError(  # covariance factor stopped being positive definite
                    f"the {name} fit diverged at step {step}: the guide's covariance is not "
                    f"positive definite ({short_error(error)[:80]}...); "
                    f"{_remedy(options, x, y, step=step)}"
                ) from None
            if not math.isfinite(loss):
                if step == 0:
                    raise ValueError(not_finite_at_start(name, "loss", x, y))
                raise FloatingPointError(
                    f"the {name} loss became {loss} at step {step}; "
                    f"{_remedy(options, x, y, step=step)}"
                )
            losses.append(loss)
            bar.update()
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
    if timings is not None:
        timings["setup_s"] = loop_began - began
        timings["steps_s"] = time.perf_counter() - loop_began
    return losses


def _remedy(options: SVIOptions, x, y, *, step: int | None = None) -> str:
    """What a diverged fit's error suggests: a smaller lr, and the data's scale; at the
    first update (``step`` ≤ 1) from a prior draw also the start itself, the likely
    culprit: a broad prior's draw can put a heteroscedastic head's σ(x) at 1e-6 and 1e6
    at once."""
    start = ""
    if step is not None and step <= 1 and options.init_loc_fn is init_to_sample:
        start = "start away from a prior draw (init_loc_fn=pyro_bnn.init.init_to_fan_in), "
    return f"try a smaller lr (now {options.lr:g}), {start}or check the scale of {data_scale(x, y)}"


def _compile_potential(potential, x, y, *, options: SVIOptions) -> None:
    """Compile ``potential`` for the shape of the steps' batches (doubled by the
    adversarial loss), so that the fit's loop times steps, not compilation."""
    rows = distributed.step_rows(options.batch_size) or len(x)
    if options.adversarial_epsilon is not None:
        rows = 2 * min(rows, len(x))
    xs, ys = torch.cat([x, x]), torch.cat([y, y])
    potential(torch.zeros(potential.layout.size), xs[:rows], ys[:rows])


def _compiled_step(
    guide, loss_fn, x, y, *, options: SVIOptions, plain: bool, distributed: bool, shared: dict
) -> compiled_step.CompiledStep | None:
    """The whole step as one compiled graph (:mod:`pyro_bnn.infer.compiled_step`) where the
    loss has a compiled objective (the plain potential ELBO of a guide it runs, or a loss
    with ``compiled_objective(guide, x, y)``, such as ``dvi``'s) on one process with a compiling
    ``backend``; else None (Pyro's ``SVI.step``)."""
    if (
        not plain
        or distributed
        or options.adversarial_epsilon is not None
        or options.backend not in ("jit", "inductor")
    ):
        return None
    if isinstance(loss_fn, elbo.PotentialELBO):
        if not compiled_step.supports(guide, loss_fn.potential):
            return None
        objective = compiled_step.PotentialObjective(
            guide, loss_fn.potential, num_particles=options.num_particles
        )
    elif hasattr(loss_fn, "compiled_objective"):
        objective = loss_fn.compiled_objective(guide, x, y)
    else:
        objective = None
    if objective is None:
        return None
    step = compiled_step.CompiledStep(
        guide, objective, backend=options.backend, cache=shared.setdefault("compiled_steps", {})
    )
    rows = min(options.batch_size or len(x), len(x))
    try:
        step.prepare(x[:rows], y[:rows])  # before the steps, which the fit times
    except Exception:  # tracing or compiling failed (an op it cannot trace): the same
        return None  # objective through Pyro's SVI.step
    return step


def _set_learning_rate(optimizer: ClippedAdam, lr: float) -> None:
    """Set the rate of every torch optimiser behind ``optimizer`` (Pyro makes one per
    parameter, on the step that first sees it, from its initial ``lr``)."""
    for torch_optimizer in optimizer.optim_objs.values():
        for group in torch_optimizer.param_groups:
            group["lr"] = lr


def _averaged_step(svi: SVI, plan: distributed.DataParallel, batch) -> float:
    """Pyro's ``SVI.step`` with the gradients (and the loss) averaged over the
    data-parallel ranks before the optimiser's update: the global minibatch's step."""
    try:
        with poutine.trace(param_only=True) as captured:
            loss = svi.loss_and_grads(svi.model, svi.guide, *batch)
    except Exception:  # the other ranks wait in the all-reduce: send them a NaN loss
        store = pyro.get_param_store()
        plan.average({store[name].unconstrained() for name in store.keys()}, math.nan)
        raise
    params = {site["value"].unconstrained() for site in captured.trace.nodes.values()}
    loss = plan.average(params, float(loss.detach() if torch.is_tensor(loss) else loss))
    svi.optim(params)
    pyro.infer.util.zero_grads(params)
    return loss


def epoch_losses(losses: list[float], num_batches: int) -> list[float]:
    """Each whole epoch's summed loss: under non-uniform KL weighting only an epoch's sum
    is the ELBO, a step's loss swinging with its batch's KL weight.

    Example:
        >>> epoch_losses([3.0, 1.0, 2.0, 0.5, 9.0], 2)
        [4.0, 2.5]
    """
    return [sum(losses[i : i + num_batches]) for i in range(0, len(losses) - num_batches + 1,
                                                              num_batches)]  # fmt: skip


def fit_map(
    model, x, y, *, name: str, options: SVIOptions, shared, progress_bar: bool,
    start: dict[str, torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], list[float]]:  # fmt: skip
    """A MAP fit of ``model`` with ``options``' schedule (from ``start``, if given) in a
    parameter store of its own: every latent site's value, and the loss history."""
    schedule = {f.name: getattr(options, f.name) for f in fields(SVIOptions)}
    if start is not None:
        schedule["init_loc_fn"] = init_to_value(values=start)
    map_options = SVIOptions(**schedule)
    rows = distributed.global_rows(len(x))
    with pyro.get_param_store().scope():
        guide = map_guide(ScaleDataPlate(rows)(model), map_options)
        losses = _fit_guide(
            x, y, name=name, guide=guide, options=map_options, shared=shared,
            progress_bar=progress_bar,
        )  # fmt: skip
        with torch.no_grad():
            values = {k: v.detach().clone() for k, v in guide.median().items()}
    return values, losses


def _map_values(model, x, y, *, name: str, options: SVIOptions, shared, progress_bar: bool):
    """``init_to_value`` at a MAP fit of ``model`` with ``options``' schedule (none of its
    parameters stay)."""
    values, _ = fit_map(model, x, y, name=f"{name} (MAP start)", options=options,
                        shared=shared, progress_bar=progress_bar)  # fmt: skip
    return init_to_value(values=values)


def run_svi_chain(
    model: Callable,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    name: str,
    seed: int,
    options: SVIOptions,
    shared: dict[str, Any],
    progress_bar: bool,
    build_guide: Callable,
    build_loss: Callable | None = None,
    build_state: Callable | None = None,
) -> Chain:
    """One SVI fit of ``build_guide(model, options)``: its guide draws as one chain, its
    loss history checked for convergence (:func:`~pyro_bnn.diagnostics.loss_diagnostics`).
    ``build_loss(model, options)``, if given, is the ELBO (default: :func:`_loss`);
    ``build_state(guide)``, if given, the chain's picklable state for the method's own
    predictive."""
    if getattr(options, "init", "sample") == "map":
        options = replace(options, init_loc_fn=_map_values(
            model, x, y, name=name, options=options, shared=shared, progress_bar=progress_bar
        ))  # fmt: skip
    rows = distributed.global_rows(len(x))
    guide = build_guide(ScaleDataPlate(rows)(model), options)
    loss_fn = None if build_loss is None else build_loss(model, options)
    timings: dict[str, float] = {}
    losses = _fit_guide(
        x, y, name=name, guide=guide, options=options, shared=shared,
        progress_bar=progress_bar, loss_fn=loss_fn, timings=timings,
    )  # fmt: skip
    history = losses
    if options.kl_weighting != "uniform":  # a step's loss carries its batch's KL weight:
        history = epoch_losses(losses, _num_batches(rows, options.batch_size))
    diagnostics, found = loss_diagnostics(history, method=name)
    try:
        draws = _guide_draws(guide, x, y, options.draws_per_chain)
    except torch.linalg.LinAlgError:  # a covariance that is not positive definite
        draws = None
    except ValueError as error:  # Pyro's check of a distribution's parameters
        if not left_support(error):
            raise
        draws = None
    if draws is None or not all(bool(torch.isfinite(v).all()) for v in draws.values()):
        raise FloatingPointError(
            f"the {name} fit diverged: it ended with parameters that are not finite or "
            f"outside their support; {_remedy(options, x, y)}"
        )
    return Chain(
        draws=draws,
        losses=losses,
        diagnostics=diagnostics,
        warnings=found,
        timings={**timings, "steps": len(losses)},
        runner=guide,
        state=None if build_state is None else build_state(guide),
    )
