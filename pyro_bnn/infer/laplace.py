"""Laplace approximations (MacKay 1992; Ritter et al. 2018; Daxberger et al. 2021).

``fit(model, x, y, method="laplace", …)`` finds the MAP with ``map``'s own SVI fit, then
fits the Gaussian N(θ_MAP, M⁻¹) whose precision M is the curvature of the negative log
joint at the mode: the generalised Gauss-Newton or empirical Fisher of the likelihood
(:mod:`pyro_bnn.curvature`) plus the prior's, in the structure asked for
(:mod:`pyro_bnn.precision`).

- ``hessian_structure``: ``"full"``, ``"diag"``, ``"kron"`` (KFAC per Linear layer; other
  sites get diagonal blocks) or ``"lowrank"`` (the top ``rank`` eigenpairs of the
  prior-whitened curvature, found matrix-free by Lanczos).
- ``subset``: ``"all"`` real-valued latent sites, or ``"last_layer"`` (the sites of the
  last layer the model calls; the body stays at its MAP). Sites with other supports (a
  learned noise precision) are kept at their MAP.
- ``prior_precision``: None takes the model's own prior (its curvature at the MAP, so a
  non-Gaussian prior works too; ``diag``/``kron``/``lowrank`` take its diagonal, ``kron``
  its mean over each block); a number replaces the prior of the Laplace sites by
  N(0, 1/δ) for the MAP fit and the approximation; ``"marglik"`` tunes a Gaussian prior
  precision (``prior_structure`` ``"scalar"`` or ``"layerwise"``, one per site) and a
  learned Gaussian noise by maximising the Laplace evidence at the MAP (MacKay; Immer et
  al. 2021), refitting the MAP under the tuned prior ``marglik_rounds − 1`` times.
- ``predictive``: ``"mc"`` replays weight draws through the model; ``"glm"`` the
  linearised network f(x) ≈ f(x; θ_MAP) + J(x)(θ − θ_MAP), with a closed-form mean and
  variance for regression and ``link_approx`` ``"probit"`` or ``"mc"`` for classifiers.

The Laplace evidence log p(y | θ*) + log p(θ*) + P/2 log 2π − ½ log det M is
``posterior.log_marginal_likelihood``.

Example:
    >>> import torch
    >>> from pyro_bnn import fit, zoo
    >>> model = zoo.build("mlp-regression", in_features=1, hidden=(8,), noise_scale=0.1)
    >>> x = torch.linspace(-1, 1, 40)[:, None]
    >>> post = fit(model, x, torch.sin(3 * x[:, 0]), method="laplace", num_steps=500,
    ...            num_draws=50, progress_bar=False, seed=0)
    >>> post.predict(x[:3]).mean.shape, post.log_marginal_likelihood < 0
    (torch.Size([3]), True)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger

from pyro_bnn import precision
from pyro_bnn.curvature import PointModel, real_sites
from pyro_bnn.diagnostics import loss_diagnostics
from pyro_bnn.infer.chains import Chain
from pyro_bnn.infer.svi import SVIOptions, fit_map
from pyro_bnn.init import trace_at_support_zero
from pyro_bnn.likelihoods import Gaussian, HeteroscedasticGaussian
from pyro_bnn.posterior import mix_moments
from pyro_bnn.replay import ObsDraws, obs_draws_of

__all__ = ["GaussianPriors", "LaplaceOptions", "LaplaceState", "LinearisedPredictive",
           "laplace_predictive", "precheck", "run_laplace_chain"]  # fmt: skip

STRUCTURES = ("full", "diag", "kron", "lowrank")
SUBSETS = ("all", "last_layer")
CURVATURES = ("ggn", "ef")
PREDICTIVES = ("mc", "glm")
LINK_APPROXIMATIONS = ("probit", "mc")
PRIOR_STRUCTURES = ("scalar", "layerwise")
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


@dataclass(frozen=True, kw_only=True)
class LaplaceOptions(SVIOptions):
    """Options of ``laplace``: the MAP fit's (``map``'s schedule) and the Gaussian's.

    ``max_full_size``: ``"full"`` refuses more weights than this (its matrix grows as
    the square: 8,000 weights take 512 MB in float64)."""

    hessian_structure: str = "kron"
    subset: str = "all"
    curvature: str = "ggn"
    predictive: str = "glm"
    link_approx: str = "probit"
    prior_precision: float | str | None = None
    prior_structure: str = "scalar"
    marglik_rounds: int = 1
    rank: int = 20
    num_draws: int = 1000
    max_full_size: int = 8000

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_choice("hessian_structure", STRUCTURES)
        self.check_choice("subset", SUBSETS)
        self.check_choice("curvature", CURVATURES)
        self.check_choice("predictive", PREDICTIVES)
        self.check_choice("link_approx", LINK_APPROXIMATIONS)
        self.check_choice("prior_structure", PRIOR_STRUCTURES)
        chosen = self.prior_precision
        if isinstance(chosen, str) and chosen != "marglik":
            raise ValueError(f"prior_precision must be a number, None or 'marglik', got {chosen!r}")
        if not isinstance(chosen, str) and chosen is not None and chosen <= 0:
            raise ValueError(f"prior_precision must be positive, got {chosen}")
        if self.marglik_rounds > 1 and chosen != "marglik":
            raise ValueError("marglik_rounds > 1 refits the MAP under a tuned prior: "
                             "give prior_precision='marglik'")  # fmt: skip
        if (
            self.hessian_structure == "lowrank"
            and self.prior_structure == "layerwise"
            and (chosen == "marglik")
        ):
            raise ValueError("hessian_structure='lowrank' tunes one prior precision: "
                             "use prior_structure='scalar'")  # fmt: skip

    @property
    def draws_per_chain(self) -> int:
        return self.num_draws


class GaussianPriors(Messenger):
    """Replace the prior of each site named in ``precisions`` by N(0, 1/δ) of its shape."""

    def __init__(self, precisions: dict[str, float]) -> None:
        super().__init__()
        self.precisions = precisions

    def _pyro_sample(self, msg) -> None:
        if msg["name"] not in self.precisions or msg["is_observed"]:
            return
        fn = msg["fn"]
        shape = fn.batch_shape + fn.event_shape
        scale = float(self.precisions[msg["name"]]) ** -0.5
        normal = dist.Normal(torch.zeros(shape), torch.full(shape, scale))
        msg["fn"] = normal.to_event(len(fn.event_shape))


def _subset(model, x, y, options: LaplaceOptions) -> tuple[list[str], list[str]]:
    """(Laplace's sites, the sites kept at the MAP), refusing what cannot be done."""
    real, other, last = real_sites(model, x, y)
    if options.subset == "last_layer":
        if last is None:
            raise ValueError(
                "subset='last_layer' needs a model whose layers are pyro_bnn.layers.Linear or "
                "Conv2d (as in the zoo and bayesianize); this model calls none"
            )
        chosen = [name for name in real if name.startswith(f"{last}.")]
        if not chosen:
            raise ValueError(
                f"subset='last_layer': the model's last layer '{last}' has no Bayesian weights "
                "(its parameters are deterministic); make it Bayesian or use subset='all'"
            )
    else:
        chosen = real
    if not chosen:
        raise ValueError("laplace needs at least one real-valued latent site (a weight)")
    return chosen, [name for name in real + other if name not in chosen]


def precheck(model, x: torch.Tensor, y: torch.Tensor, options: LaplaceOptions) -> None:
    """Refuse before the MAP fit what the options cannot do with this model."""
    chosen, _ = _subset(model, x, y, options)
    values = trace_at_support_zero(model, x[:2], y[:2])
    size = sum(int(values.nodes[name]["value"].numel()) for name in chosen)
    if options.hessian_structure == "full" and size > options.max_full_size:
        megabytes = size**2 * 8 / 2**20
        raise ValueError(
            f"hessian_structure='full' with {size:,} weights needs a {size:,}² matrix "
            f"({megabytes:,.0f} MB), over max_full_size={options.max_full_size:,}; use 'kron', "
            "'diag' or 'lowrank', subset='last_layer', or raise max_full_size"
        )
    if options.hessian_structure == "lowrank" and size < 2:
        raise ValueError("hessian_structure='lowrank' needs at least two weights")


@dataclass
class LaplaceState:
    """One chain's Laplace approximation: the sites in θ and their MAP ``theta``, every
    latent site's MAP ``values``, the precision ``structure``, the likelihood factor ``s``
    and prior precision ``d`` (per weight, or a matrix) that complete it, the tuned noise
    (``noise_site`` and its precision value, if any), and the evidence."""

    names: tuple[str, ...]
    theta: torch.Tensor
    values: dict[str, torch.Tensor]
    structure: Any
    s: float
    d: torch.Tensor
    log_marginal_likelihood: float
    prior_precision: dict[str, float] | None = None
    noise_site: str | None = None
    noise_precision: float | None = None
    link_approx: str = "probit"

    @property
    def nbytes(self) -> int:
        """Bytes held by the Gaussian: its curvature structure, prior and mode."""
        tensors = [self.theta, self.d, *(
            v for v in vars(self.structure).values() if isinstance(v, torch.Tensor)
        )]  # fmt: skip
        for block in getattr(self.structure, "blocks", ()):
            tensors += [v for v in vars(block).values() if isinstance(v, torch.Tensor)]
        return sum(t.numel() * t.element_size() for t in tensors)

    def point(self, model) -> PointModel:
        return PointModel(model, self.values, self.names)

    def sample(self, n: int) -> dict[str, torch.Tensor]:
        """n draws of every latent site: θ from the Gaussian, the rest at the MAP."""
        theta = self.theta.double() + self.structure.sample(self.s, self.d, n)
        point = PointModel(lambda *a: None, self.values, self.names)
        draws = {k: v.expand(n, *v.shape).clone() for k, v in self.values.items()}
        draws.update(point.split(theta.to(self.theta.dtype)))
        return draws

    def output_covariance(self, jac: torch.Tensor) -> torch.Tensor:
        """J M⁻¹ Jᵀ per row, (rows, C, C)."""
        return self.structure.quad(self.s, self.d, jac.double())


def _likelihood_info(point: PointModel, x, y):
    """The evaluation at the MAP on all rows, and whether the noise is a learned Gaussian
    precision that the evidence may tune (its site name)."""
    ev = point.evaluate(point.theta, x, y)
    noise_site = None
    if isinstance(ev.likelihood, Gaussian) and ev.likelihood.learned:
        noise_site = "precision" if "precision" in point.values else None
    return ev, noise_site


def _structure(point: PointModel, x, y, options: LaplaceOptions, d0: torch.Tensor):
    """The likelihood curvature in the structure asked for."""
    empirical = options.curvature == "ef"
    kind = options.hessian_structure
    if kind == "full":
        return precision.Full(point.ggn(x, y, empirical=empirical))
    if kind == "diag":
        return precision.Diagonal(point.ggn_diagonal(x, y, empirical=empirical))
    if kind == "kron":
        return _kron(point, x, y, empirical=empirical)
    return _lowrank(point, x, y, options, d0, empirical=empirical)


def _kron(point: PointModel, x, y, *, empirical: bool) -> precision.Kron:
    factors = point.kron_factors(x, y, empirical=empirical)
    slices = point.slices()
    blocks, uncovered = [], []
    for name, where in slices.items():
        layer, _, attribute = name.rpartition(".")
        if layer in factors and attribute == "weight":
            a, g, _ = factors[layer]
            blocks.append(("kron", where.start, where.stop, (a, g)))
        elif layer in factors and attribute == "bias":
            _, g, locations = factors[layer]
            blocks.append(("bias", where.start, where.stop, (g * locations,)))
        else:
            uncovered.append((name, where))
    if uncovered:
        diagonal = point.ggn_diagonal(x, y, empirical=empirical)
        for _, where in uncovered:
            blocks.append(("diag", where.start, where.stop, (diagonal[where],)))
    blocks.sort(key=lambda block: block[1])
    return precision.Kron.build(blocks, point.size)


def _lowrank(point, x, y, options: LaplaceOptions, d0, *, empirical: bool) -> precision.LowRank:
    import scipy.sparse.linalg  # imported when needed: `import pyro_bnn` stays light

    matvec = point.ggn_matvec(x, y, empirical=empirical)
    root = d0.rsqrt()
    size = point.size
    rank = min(options.rank, size - 1)

    def whitened(vector: np.ndarray) -> np.ndarray:
        v = torch.as_tensor(vector, dtype=torch.float64, device=root.device).reshape(-1)
        return (root * matvec(root * v)).cpu().numpy()

    operator = scipy.sparse.linalg.LinearOperator((size, size), matvec=whitened, dtype=np.float64)
    values, vectors = scipy.sparse.linalg.eigsh(operator, k=rank, which="LA")
    return precision.LowRank(
        torch.as_tensor(values).clamp_min(0), torch.as_tensor(vectors), d0.clone()
    )


def _groups(point: PointModel, options: LaplaceOptions) -> list[list[str]]:
    if options.prior_structure == "layerwise":
        return [[name] for name in point.names]
    return [list(point.names)]


def _prior_vector(point: PointModel, precisions: dict[str, torch.Tensor]) -> torch.Tensor:
    """The per-weight prior precision of per-site values."""
    return torch.cat([
        precisions[name].double().expand(size)
        for name, size in zip(point.names, point.sizes, strict=True)
    ])  # fmt: skip


class _Evidence:
    """The Laplace evidence as a function of the prior precision (one per group) and,
    for a learned Gaussian noise, its log sd."""

    def __init__(self, point, structure, ev, y, *, noise_site, groups) -> None:
        self.point, self.structure, self.groups = point, structure, groups
        self.theta = point.theta.double()
        self.slices = point.slices()
        self.log_lik = ev.log_lik.double().sum()
        self.noise_site = noise_site
        if noise_site is not None:
            loc = ev.u[:, 0].detach().double()
            self.rss = float((y.double() - loc).pow(2).sum())
            self.rows = len(y)
            self.curvature_var = float(1 / point.values[noise_site].double())

    def likelihood(self, log_sd: torch.Tensor | None):
        """(log p(y | θ*), the likelihood factor s) at noise sd exp(log_sd)."""
        if log_sd is None:
            return self.log_lik, 1.0
        var = (2 * log_sd).exp()
        log_lik = -self.rows * (log_sd + _HALF_LOG_2PI) - self.rss / (2 * var)
        return log_lik, self.curvature_var / var

    def __call__(self, log_delta: torch.Tensor, log_sd: torch.Tensor | None) -> torch.Tensor:
        log_lik, s = self.likelihood(log_sd)
        precisions, log_prior = {}, 0.0
        for group, value in zip(self.groups, log_delta, strict=True):
            for name in group:
                where = self.slices[name]
                size = where.stop - where.start
                precisions[name] = value.exp()
                log_prior = log_prior + 0.5 * size * (value - 2 * _HALF_LOG_2PI) - 0.5 * value.exp(
                ) * self.theta[where].pow(2).sum()  # fmt: skip
        d = _prior_vector(self.point, precisions)
        size = self.point.size
        return log_lik + log_prior + size * _HALF_LOG_2PI - 0.5 * self.structure.logdet(s, d)


def _tune(evidence: _Evidence, initial_delta: list[float], initial_sd: float | None):
    """Maximise the evidence over log δ (and log σ) with L-BFGS; the tuned values."""
    log_delta = torch.tensor([math.log(v) for v in initial_delta], dtype=torch.float64,
                             requires_grad=True)  # fmt: skip
    tuned = [log_delta]
    log_sd = None
    if initial_sd is not None:
        log_sd = torch.tensor(math.log(initial_sd), dtype=torch.float64, requires_grad=True)
        tuned.append(log_sd)
    optimizer = torch.optim.LBFGS(tuned, lr=1, max_iter=200, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-9, tolerance_change=1e-12)  # fmt: skip

    def closure():
        optimizer.zero_grad()
        loss = -evidence(log_delta, log_sd)
        loss.backward()
        return loss

    optimizer.step(closure)
    sd = None if log_sd is None else float(log_sd.detach().exp())
    return log_delta.detach().exp().tolist(), sd


def _map(model, x, y, *, name, options, shared, progress_bar, precisions, start=None):
    """The MAP of ``model`` (its Laplace sites' priors replaced where ``precisions`` says):
    every latent site's value, and the loss history."""
    handled = GaussianPriors(precisions)(model) if precisions else model
    return fit_map(handled, x, y, name=name, options=options, shared=shared,
                   progress_bar=progress_bar, start=start)  # fmt: skip


def run_laplace_chain(
    model, x: torch.Tensor, y: torch.Tensor, *, name: str, seed: int,
    options: LaplaceOptions, shared: dict[str, Any], progress_bar: bool,
) -> Chain:  # fmt: skip
    """One Laplace fit: the MAP, the curvature at it, the prior (the model's, a number, or
    tuned by the evidence), and ``num_draws`` draws of the Gaussian."""
    chosen, _ = _subset(model, x, y, options)
    given = options.prior_precision
    precisions = {site: float(given) for site in chosen} if isinstance(given, int | float) else {}
    began = time.perf_counter()
    values, losses = _map(model, x, y, name=name, options=options, shared=shared,
                          progress_bar=progress_bar, precisions=precisions)  # fmt: skip
    map_s = time.perf_counter() - began
    began = time.perf_counter()
    rounds = options.marglik_rounds if given == "marglik" else 1
    state = _approximate(model, x, y, values, chosen, options)
    for round_ in range(1, rounds):  # refit the MAP under the tuned prior, from the last one
        values, more = _map(model, x, y, name=f"{name} (round {round_ + 1})",
                            options=options, shared={}, progress_bar=progress_bar,
                            precisions=state.prior_precision, start=state.values)  # fmt: skip
        losses += more
        state = _approximate(model, x, y, values, chosen, options)
    curvature_s = time.perf_counter() - began
    diagnostics, found = loss_diagnostics(losses, method=name)
    diagnostics["log_marginal_likelihood"] = state.log_marginal_likelihood
    for site, value in (state.prior_precision or {}).items():
        diagnostics[f"prior_precision[{site}]"] = value
    if state.noise_precision is not None:
        diagnostics["noise_scale"] = state.noise_precision**-0.5
    draws = {k: v[None] for k, v in state.sample(options.num_draws).items()}
    return Chain(
        draws=draws, losses=losses, diagnostics=diagnostics, warnings=found,
        timings={"steps_s": map_s, "curvature_s": curvature_s, "steps": len(losses)},
        state=state,
    )  # fmt: skip


def _approximate(model, x, y, values, chosen, options: LaplaceOptions) -> LaplaceState:
    """The Laplace approximation at the MAP ``values``."""
    point = PointModel(model, values, chosen)
    ev, noise_site = _likelihood_info(point, x, y)
    given = options.prior_precision
    if given == "marglik":
        d0 = torch.ones(point.size, dtype=torch.float64)
    elif given is not None:
        d0 = torch.full((point.size,), float(given), dtype=torch.float64)
    else:
        d0 = point.prior_curvature(x, full=options.hessian_structure == "full")
    diag0 = d0 if d0.dim() == 1 else d0.diagonal()
    if options.hessian_structure == "lowrank" and bool((diag0 <= 0).any()):
        raise precision.NotPositiveDefinite(
            "hessian_structure='lowrank' whitens by the prior's curvature, which is not "
            "positive here: use a Gaussian prior or prior_precision=<number>"
        )
    structure = _structure(point, x, y, options, diag0)
    values = dict(point.values)
    noise_precision = tuned = None
    if given is None:  # the model's own prior
        d, s = d0, 1.0
        with torch.no_grad():
            log_prior = point.log_prior(point.theta, x).double()
            lml = float(ev.log_lik.double().sum() + log_prior
                        + point.size * _HALF_LOG_2PI - 0.5 * structure.logdet(s, d))  # fmt: skip
    else:  # a Gaussian prior, given or tuned by the evidence
        groups = _groups(point, options) if given == "marglik" else [list(point.names)]
        evidence = _Evidence(point, structure, ev, y, noise_site=noise_site, groups=groups)
        slices = point.slices()
        deltas = [float(d0[slices[group[0]]].mean()) for group in groups]
        sd = None
        if given == "marglik":
            sd = None if noise_site is None else float(values[noise_site]) ** -0.5
            deltas, sd = _tune(evidence, deltas, sd)
        tuned = {name: delta for group, delta in zip(groups, deltas, strict=True)
                 for name in group}  # fmt: skip
        d = _prior_vector(point, {k: torch.tensor(v) for k, v in tuned.items()})
        with torch.no_grad():
            log_sd = None if sd is None else torch.tensor(math.log(sd), dtype=torch.float64)
            log_delta = torch.tensor([math.log(v) for v in deltas], dtype=torch.float64)
            lml = float(evidence(log_delta, log_sd))
            s = float(evidence.likelihood(log_sd)[1])
        if sd is not None:
            noise_precision = sd**-2
            values[noise_site] = torch.as_tensor(noise_precision, dtype=values[noise_site].dtype)
    return LaplaceState(
        names=point.names, theta=point.theta, values=values, structure=structure,
        s=s, d=d, log_marginal_likelihood=lml, prior_precision=tuned, noise_site=noise_site,
        noise_precision=noise_precision, link_approx=options.link_approx,
    )  # fmt: skip


@dataclass
class LinearisedPredictive:
    """The GLM predictive of Laplace chains: the network linearised at each chain's MAP.

    ``obs_draws``: the observed site under f(x) = f*(x) + J(x)(θ − θ*) for each weight draw
    (for ArviZ and quantiles); ``moments``: the closed-form predictive mean and variance
    of regression, and the probit-approximated class probabilities of classifiers."""

    link_approx: str = "probit"

    def _linearised(self, posterior, chain: int, x: torch.Tensor):
        """(rows, state, J, evaluation) of chain ``chain`` over row batches of ``x`` that
        bound the Jacobian's memory."""
        state = posterior.states[chain]
        with posterior.pyro_context(chain):
            for rows, jac, ev in state.point(posterior.model).chunks(x, None, raw=True):
                yield rows, state, jac, ev

    def obs_draws(self, posterior, x, y, *, index, row_batch: int, log_joint: bool) -> ObsDraws:
        chain_of = index // posterior.num_draws
        draws = posterior._draws_at(index)
        parts = []
        for chain in range(posterior.num_chains):
            keep = chain_of == chain
            if not bool(keep.any()):
                continue
            chunks = []
            for rows, state, jac, ev in self._linearised(posterior, chain, x):
                ys = None if y is None else y[rows]
                theta = torch.cat([draws[name][keep].reshape(int(keep.sum()), -1)
                                   for name in state.names], -1)  # fmt: skip
                offset = (theta - state.theta).to(jac.dtype)
                shape = ev.capture.output.shape
                f = ev.raw[None] + torch.einsum("ncp,sp->snc", jac, offset)
                f = f.reshape(len(offset), *shape)
                noise = {}
                if state.noise_site is not None:  # a draw per weight draw, broadcast over rows
                    value = draws[state.noise_site][keep]
                    noise[state.noise_site] = value.reshape(-1, *([1] * (f.dim() - 1)))
                with poutine.condition(data=noise):
                    fn = ev.likelihood.distribution(f)
                if ys is not None:
                    ys = ev.likelihood.check_targets(ys, ev.raw.reshape(shape))
                chunks.append(obs_draws_of(fn, ys, batch=(len(offset), len(ev.raw))))
            parts.append((keep, ObsDraws.concat(chunks, dim=1)))
        out = ObsDraws.gather(parts, len(chain_of))
        if log_joint and y is not None:
            from pyro_bnn.replay import replay

            # the prior density of each draw, from the model itself
            with posterior.pyro_context():
                nonlinear = replay(posterior.model, draws, x, y, log_joint=True)
            out.log_joint = nonlinear.log_joint - nonlinear.log_lik.sum(-1) + out.log_lik.sum(-1)
        return out

    def moments(self, posterior, x, *, row_batch: int) -> dict[str, torch.Tensor] | None:
        """Closed-form mean, epistemic and aleatoric variance (regression) or class
        probabilities (classifiers, probit), mixed over chains; None where there is none."""
        per_chain = []
        for chain in range(posterior.num_chains):
            parts = [_moments(state, jac, ev, self.link_approx)
                     for _, state, jac, ev in self._linearised(posterior, chain, x)]  # fmt: skip
            if parts[0] is None:
                return None
            per_chain.append({k: torch.cat([p[k] for p in parts]) for k in parts[0]})
        return mix_moments(per_chain)


def _moments(state, jac, ev, link_approx: str) -> dict[str, torch.Tensor] | None:
    cov = state.output_covariance(jac)
    base = ev.likelihood.distribution(ev.raw.reshape(ev.capture.output.shape)) if isinstance(
        ev.likelihood, HeteroscedasticGaussian) else None  # fmt: skip
    variance = cov.diagonal(dim1=-2, dim2=-1)
    if isinstance(ev.likelihood, Gaussian | HeteroscedasticGaussian):
        if base is None:  # homoscedastic: the noise at the MAP (or as tuned)
            noise = ev.fisher[:, 0, 0].double().reciprocal()
            if state.noise_precision is not None:
                noise = torch.full_like(noise, 1 / state.noise_precision)
        else:
            noise = base.variance.double()
        return {"mean": ev.raw[:, 0].double(), "epistemic_var": variance[:, 0],
                "aleatoric_var": noise}  # fmt: skip
    if link_approx != "probit":
        return None
    kappa = (1 + math.pi / 8 * variance).rsqrt()
    logits = kappa * ev.raw.double()
    if logits.shape[-1] == 1:  # Bernoulli
        p = torch.sigmoid(logits[:, 0])
        return {"probs": torch.stack([1 - p, p], -1)}
    return {"probs": torch.softmax(logits, -1)}


def laplace_predictive(options: LaplaceOptions) -> LinearisedPredictive | None:
    """The method's own predictive: the linearised one for ``predictive="glm"``."""
    return LinearisedPredictive(options.link_approx) if options.predictive == "glm" else None
