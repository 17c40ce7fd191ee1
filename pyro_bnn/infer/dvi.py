"""Deterministic variational inference (Wu et al. 2019): the mean-field ELBO without sampling.

The guide is ``meanfield``'s, Pyro's ``AutoDiagonalNormal``. :class:`DeterministicELBO` is
a Pyro ``ELBO`` that evaluates −ELBO = KL(q ‖ p) − E_q[log p(y | w)] in closed form:

- the network's output mean and covariance by moment propagation through its Linear and
  ReLU layers (:mod:`pyro_bnn.moments`), ``covariance="diagonal"`` or ``"full"``;
- the expected log-likelihood of a Gaussian (fixed noise, or a learned precision whose
  guide is log-normal: E[τ] = exp(μ + s²/2)) or of a heteroscedastic Gaussian with a
  log-variance head (``HeteroscedasticGaussian(link="exp")``), where
  E[(y − f₀)² e^{−f₁}] = e^{−m₁ + v₁/2} ((y − m₀ + c₀₁)² + v₀);
- the KL of each site in closed form: a Gaussian prior (fixed, or empirical Bayes), and
  a Gamma prior on a positive site under its log-normal guide.

Pyro's SVI runs it like any ELBO; minibatch scaling, KL weighting and empirical-Bayes
prior parameters come from the model's own trace. With ``backend="jit"`` (the default) or
``"inductor"``, each step (this loss at the guide's loc and scale, its gradient and
``ClippedAdam``'s update of the guide's and the model's parameters) is one compiled graph
(:class:`DeterministicObjective` in :mod:`pyro_bnn.infer.compiled_step`), the same steps
as ``SVI.step``'s. The closed-form predictive
(:class:`MomentPredictive`) is what ``posterior.predict`` reports (and
:func:`predictive_moments`); the Posterior's draws come from the same guide.

Example:
    >>> import torch
    >>> from pyro_bnn import fit, zoo
    >>> model = zoo.build("mlp-regression", in_features=1, hidden=(8,), noise_scale=0.1)
    >>> x = torch.linspace(-1, 1, 20)[:, None]
    >>> post = fit(model, x, x[:, 0] ** 2, method="dvi", num_steps=50, num_draws=5,
    ...            progress_bar=False, seed=0)
    >>> mean, var = predictive_moments(post, x[:3])
    >>> mean.shape, bool((var > 0).all())
    (torch.Size([3]), True)
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import ELBO
from pyro.infer.autoguide import AutoDiagonalNormal
from torch import nn
from torch.distributions import biject_to
from torch.distributions.transforms import AffineTransform, ComposeTransform, ExpTransform

from pyro_bnn.infer.svi import GaussianGuideOptions
from pyro_bnn.layers import Linear
from pyro_bnn.likelihoods import OBS_SITE, Gaussian, HeteroscedasticGaussian, Likelihood
from pyro_bnn.meanfield import all_loc_scale, unpack_loc_scale
from pyro_bnn.moments import linear_moments, relu_covariance, relu_moments
from pyro_bnn.posterior import mix_moments
from pyro_bnn.priors import base_distribution

__all__ = [
    "COVARIANCES",
    "DVIOptions",
    "DeterministicELBO",
    "DeterministicObjective",
    "MomentPredictive",
    "Network",
    "deterministic_elbo",
    "dvi_predictive",
    "find_network",
    "guide_state",
    "predictive_moments",
]

COVARIANCES = ("diagonal", "full")
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_PASS_THROUGH = (nn.Identity, nn.Flatten)


@dataclass(frozen=True)
class Network:
    """The part of ``model`` that moment propagation runs: ``module`` (an ``nn.Sequential``
    of Linear layers and ReLUs, or one Linear layer) whose output feeds the likelihood,
    and its ``layers`` in order."""

    module: nn.Module
    layers: tuple[nn.Module, ...]
    likelihood: Likelihood
    model: nn.Module


def _likelihood_of(model: nn.Module) -> Likelihood:
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, Likelihood):
                return value
    raise ValueError(
        "dvi needs a model whose likelihood is a pyro_bnn.likelihoods object (as the zoo's "
        "models have); none was found on this model"
    )


def find_network(model: nn.Module) -> Network:
    """The smallest ``nn.Sequential`` of ``model`` holding every Bayesian layer (or the one
    Bayesian Linear layer), checked layer by layer: anything but Linear, ReLU, Identity
    or Flatten is an error that names the layer."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"dvi needs a PyroModule model, got {type(model).__name__}")
    bayesian = [m for m in model.modules() if getattr(m, "_pyro_samples", None)]
    if not bayesian:
        raise ValueError("dvi found no Bayesian layers (PyroSample weights) in this model")
    likelihood = _likelihood_of(model)
    if len(bayesian) == 1 and isinstance(bayesian[0], Linear):
        return Network(bayesian[0], (bayesian[0],), likelihood, model)
    candidates = [
        m for m in model.modules()
        if isinstance(m, nn.Sequential) and all(any(b is c for c in m.modules()) for b in bayesian)
    ]  # fmt: skip
    if not candidates:
        names = ", ".join(type(b).__name__ for b in bayesian)
        raise ValueError(
            f"dvi propagates moments through one nn.Sequential holding every Bayesian layer; "
            f"this model's Bayesian layers ({names}) are not in one"
        )
    sequential = min(candidates, key=lambda m: len(list(m.modules())))
    for name, layer in sequential.named_children():
        if not isinstance(layer, (Linear, nn.ReLU, *_PASS_THROUGH)):
            raise ValueError(
                f"dvi's moment propagation covers Linear and ReLU layers; layer {name!r} is "
                f"a {type(layer).__name__}: use meanfield for this model"
            )
    return Network(sequential, tuple(sequential), likelihood, model)


def _site_moments(module: nn.Module, attribute: str, q: dict) -> tuple[Any, Any]:
    """(loc, scale) of one parameter: the guide's for a latent site, the value and no
    scale for a deterministic parameter."""
    name = f"{module._pyro_name}.{attribute}" if module._pyro_name else attribute
    if name in q:
        return q[name]
    return getattr(module, attribute), None


def propagate(
    network: Network, x: torch.Tensor, q: dict, *, covariance: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Output mean (rows, out) and covariance (rows, out, out) of the network at ``x``
    under the mean-field Gaussian ``q`` ({site: (loc, scale)})."""
    full = covariance == "full"
    linears = [m for m in network.layers if isinstance(m, Linear)]
    mean, second = x.reshape(len(x), -1) if x.dim() > 2 else x, None  # inputs are exact
    for layer in network.layers:
        if isinstance(layer, _PASS_THROUGH):
            continue
        if isinstance(layer, nn.ReLU):
            if full:
                mean, second = relu_covariance(mean, second)
            else:
                mean, second = relu_moments(mean, second)
            continue
        last = layer is linears[-1]
        w_loc, w_scale = _site_moments(layer, "weight", q)
        b_loc, b_scale = _site_moments(layer, "bias", q)
        if w_scale is None:
            w_scale = torch.zeros_like(w_loc)
        if second is None:  # exact input: zero (co)variance
            second = torch.zeros_like(mean)
            second = torch.diag_embed(second) if full else second
        # the output heads' covariance, which the heteroscedastic likelihood needs
        mean, second = linear_moments(
            mean, second, weight_loc=w_loc, weight_scale=w_scale, bias_loc=b_loc,
            bias_scale=b_scale, full=full, output_covariance=last,
        )  # fmt: skip
    if second.dim() == mean.dim():  # ended on a ReLU in the diagonal variant
        second = torch.diag_embed(second)
    return mean, second


def _check_likelihood(likelihood: Likelihood) -> None:
    """Refuse a likelihood whose expectation has no closed form here."""
    if isinstance(likelihood, HeteroscedasticGaussian) and likelihood.link != "exp":
        raise ValueError(
            "dvi's closed-form expected log-likelihood needs the log-variance head: "
            "HeteroscedasticGaussian(link='exp') (zoo: mlp-heteroscedastic with "
            "link='exp'); the softplus scale has no closed form"
        )
    if not isinstance(likelihood, Gaussian | HeteroscedasticGaussian):
        raise ValueError(
            f"dvi's closed-form expected log-likelihood covers Gaussian and heteroscedastic "
            f"Gaussian likelihoods, not {type(likelihood).__name__}: use meanfield"
        )


def _expected_log_likelihood(
    likelihood: Likelihood, y: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor, q: dict
) -> torch.Tensor:
    """E_q[log p(y_i | f(x_i))] per row, in closed form (:func:`_check_likelihood` has
    accepted ``likelihood``)."""
    if isinstance(likelihood, Gaussian):
        if mean.shape[-1] != 1:
            raise ValueError(f"a Gaussian likelihood needs one output, got {mean.shape[-1]}")
        m, v = mean[..., 0], cov[..., 0, 0]
        if not likelihood.learned:
            precision = 1.0 / likelihood.scale**2
            log_precision = math.log(precision)
            expected_precision = precision
        else:
            loc, scale = q["precision"]  # log τ ~ N(loc, scale²)
            log_precision, expected_precision = loc, torch.exp(loc + scale.square() / 2)
        return (
            0.5 * log_precision - _HALF_LOG_2PI - 0.5 * expected_precision * ((y - m).square() + v)
        )
    m0, m1 = mean[..., 0], mean[..., 1]  # heteroscedastic, log-variance head
    v0, v1, c01 = cov[..., 0, 0], cov[..., 1, 1], cov[..., 0, 1]
    tilted = (y - m0 + c01).square() + v0
    return -_HALF_LOG_2PI - 0.5 * m1 - 0.5 * torch.exp(-m1 + v1 / 2) * tilted


def _is_exp(transform) -> bool:
    """Whether ``transform`` is exp (torch writes a non-negative support's as exp then
    x + 0), read from its parts, not its values: a compiled step traces this."""
    if isinstance(transform, ExpTransform):
        return True
    if not isinstance(transform, ComposeTransform) or len(transform.parts) != 2:
        return False
    first, then = transform.parts
    return (
        isinstance(first, ExpTransform)
        and isinstance(then, AffineTransform)
        and all(float(v) == c for v, c in ((then.loc, 0.0), (then.scale, 1.0)))
    )


def _kl(name: str, prior: dist.Distribution, loc: torch.Tensor, scale: torch.Tensor):
    """KL(q ‖ p) of one site, q = N(loc, scale²) in the site's unconstrained space."""
    base = base_distribution(prior)
    if isinstance(base, dist.Normal):
        p_loc, p_scale = base.loc, base.scale
        ratio = scale / p_scale
        kl = -ratio.log() + 0.5 * (ratio.square() + ((loc - p_loc) / p_scale).square() - 1)
        return kl.expand(loc.shape).sum()
    if isinstance(base, dist.Gamma) and _is_exp(biject_to(prior.support)):
        alpha, beta = base.concentration, base.rate  # q(τ) log-normal: E log τ = loc
        neg_entropy = -(loc + 0.5 + scale.log() + _HALF_LOG_2PI)
        log_p = (alpha * beta.log() - torch.lgamma(alpha) + (alpha - 1) * loc
                 - beta * torch.exp(loc + scale.square() / 2))  # fmt: skip
        return (neg_entropy - log_p).expand(loc.shape).sum()
    raise ValueError(
        f"dvi needs each site's KL in closed form; site {name!r} has a "
        f"{type(base).__name__} prior (supported: Normal, and Gamma on a positive site)"
    )


class DeterministicELBO(ELBO):
    """−ELBO of a mean-field Gaussian guide by moment propagation, without sampling.

    ``network`` (:func:`find_network`) is the model's propagated part; ``covariance``
    ``"diagonal"`` or ``"full"``."""

    def __init__(self, network: Network, *, covariance: str = "diagonal") -> None:
        super().__init__(num_particles=1)
        if covariance not in COVARIANCES:
            raise ValueError(f"covariance must be 'diagonal' or 'full', got {covariance!r}")
        _check_likelihood(network.likelihood)
        self.network, self.covariance = network, covariance

    def _q(self, guide, x, y) -> dict:
        if guide.prototype_trace is None:
            guide(x, y)
        with guide._pyro_context:
            return all_loc_scale(guide)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        x, y = args[0], args[1] if len(args) > 1 else kwargs.get("y")
        if y is None:
            raise ValueError("the deterministic ELBO needs targets y")
        q = self._q(guide, x, y)
        with _random_stream_kept(x):
            return self.loss_at(model, guide, q, x, y)

    def loss_at(self, model, guide, q: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """−ELBO of the mean-field Gaussian ``q`` ({site: (loc, scale)}) laid out as
        ``guide``'s sites; the model's own parameters are read from Pyro's store."""
        prototype = guide.prototype_trace.nodes
        values = {n: biject_to(prototype[n]["fn"].support)(loc) for n, (loc, _) in q.items()}
        moments: dict[str, torch.Tensor] = {}

        def hook(module, inputs, output):
            mean, cov = propagate(self.network, inputs[0], q, covariance=self.covariance)
            moments["mean"], moments["cov"] = mean, cov
            return mean

        handle = self.network.module.register_forward_hook(hook)
        try:
            trace = poutine.trace(poutine.condition(model, data=values)).get_trace(x, y)
        finally:
            handle.remove()
        if "mean" not in moments:
            raise ValueError("dvi: the model did not run its network on x")
        obs = trace.nodes[OBS_SITE]
        expected = _expected_log_likelihood(
            self.network.likelihood, obs["value"], moments["mean"], moments["cov"], q
        )
        loss = -(expected.sum() * obs["scale"])
        for name, (loc, scale) in q.items():
            site = trace.nodes[name]
            loss = loss + site["scale"] * _kl(name, site["fn"], loc, scale)
        return loss

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError("the deterministic ELBO draws no traces")

    def compiled_objective(self, guide, x, y) -> DeterministicObjective | None:
        """This ELBO as a compiled step's objective (:mod:`pyro_bnn.infer.compiled_step`)
        for ``guide`` on batches like ``(x, y)``, or None where the step cannot run it: a
        guide other than ``AutoDiagonalNormal``, or a model holding parameters in its
        modules, deterministic weights or ``PyroParam``s (PyroModule reads those from the
        module, so the step could not feed them in; it feeds in the model's plain
        ``pyro.param`` values, such as an empirical-Bayes prior's scales)."""
        if type(guide) is not AutoDiagonalNormal:
            return None
        if next(self.network.model.parameters(), None) is not None:
            return None
        with _random_stream_kept(x):
            return DeterministicObjective(self, guide, x, y)

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return loss.item()


class DeterministicObjective:
    """:class:`DeterministicELBO` as a compiled step's objective: the loss at the guide's
    flat loc and scale as tensors (no draws), with the model's own ``pyro.param`` values
    (empirical-Bayes prior scales, a learned noise prior's rate) among the step's
    parameters, as ``SVI`` updates them."""

    noise_size = 0
    num_particles = 1

    def __init__(self, elbo: DeterministicELBO, guide: AutoDiagonalNormal, x, y) -> None:
        self.elbo, self.guide = elbo, guide
        self.key = ("dvi", id(elbo.network.module), elbo.covariance)
        with torch.no_grad():
            q = all_loc_scale(guide)
            with poutine.trace(param_only=True) as read:  # what the model reads from the store
                self.elbo.loss_at(guide.model, guide, q, x, y)
        self.model_parameters = tuple(read.trace.param_nodes)

    def _q(self, loc, scale) -> dict:
        return unpack_loc_scale(self.guide, loc, scale)

    def loss(self, values, noise, x, y) -> torch.Tensor:
        q = self._q(values["loc"], values["scale"])
        return self.elbo.loss_at(self.guide.model, self.guide, q, x, y)

    @contextlib.contextmanager
    def unvalidated(self, x, y) -> Iterator[None]:
        """Tracing's context: no validation, and the random stream kept (the traced run of
        the model draws only what conditioning discards)."""
        with pyro.validation_enabled(False), _random_stream_kept(x):
            yield


def _random_stream_kept(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """A run of the model under ``loss_at`` draws nothing it keeps: the guide's
    ``init_loc_fn`` draws at sites that conditioning then overrides. This context gives
    the random stream back as it was, so the deterministic ELBO draws nothing, compiled or
    not (the minibatches are the same either way)."""
    return torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else [])


def output_moments(guide, network: Network, x: torch.Tensor, *, covariance: str):
    """The network's output mean and covariance at ``x`` under ``guide``."""
    with guide._pyro_context, torch.no_grad():
        q = all_loc_scale(guide)
        return (*propagate(network, x, q, covariance=covariance), q)


def guide_state(guide) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The fitted guide's (μ, σ) of every site, detached: a chain's picklable state, which
    the closed-form predictive reads (also for chains run in worker processes)."""
    with guide._pyro_context, torch.no_grad():
        return {k: (m.detach().clone(), s.detach().clone()) for k, (m, s) in
                all_loc_scale(guide).items()}  # fmt: skip


@dataclass(frozen=True)
class MomentPredictive:
    """``dvi``'s own predictive: the closed-form mean and variance of y by moment
    propagation under each chain's guide, mixed evenly over chains; the draws (for ArviZ,
    quantiles) replay the guide's draws through the model."""

    covariance: str = "diagonal"

    def obs_draws(self, posterior, x, y, *, index, row_batch: int, log_joint: bool) -> None:
        return None  # replay the draws

    def moments(self, posterior, x, *, row_batch: int) -> dict[str, torch.Tensor]:
        network = find_network(posterior.model)
        per_chain = []
        for chain, q in enumerate(posterior.states):
            parts = []
            for start in range(0, len(x), row_batch):
                with posterior.pyro_context(chain), torch.no_grad():
                    mean, cov = propagate(network, x[start : start + row_batch], q,
                                          covariance=self.covariance)  # fmt: skip
                loc, noise = _predictive_loc_noise(network.likelihood, mean, cov, q)
                parts.append({"mean": loc, "epistemic_var": cov[..., 0, 0],
                              "aleatoric_var": noise})  # fmt: skip
            per_chain.append({k: torch.cat([p[k] for p in parts]) for k in parts[0]})
        return mix_moments(per_chain)


def dvi_predictive(options: DVIOptions) -> MomentPredictive:
    return MomentPredictive(options.covariance)


def predictive_moments(posterior, x) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form predictive mean and variance of y at ``x`` (rows,) of a ``dvi``
    posterior, mixed evenly over its chains (what ``posterior.predict`` reports)."""
    if posterior.method != "dvi":
        raise ValueError(f"closed-form moments are dvi's; this posterior is {posterior.method!r}")
    x = torch.as_tensor(x, dtype=posterior.x_train.dtype)
    covariance = posterior.options.get("covariance", "diagonal")
    found = MomentPredictive(covariance).moments(posterior, x, row_batch=max(len(x), 1))
    return found["mean"], found["epistemic_var"] + found["aleatoric_var"]


def _predictive_loc_noise(likelihood, mean, cov, q) -> tuple[torch.Tensor, torch.Tensor]:
    loc = mean[..., 0]
    if isinstance(likelihood, Gaussian):
        if not likelihood.learned:
            return loc, torch.full_like(loc, likelihood.scale**2)
        p_loc, p_scale = q["precision"]  # E[1/τ] under log τ ~ N(loc, scale²)
        return loc, torch.exp(-p_loc + p_scale.square() / 2).expand_as(loc)
    return loc, torch.exp(mean[..., 1] + cov[..., 1, 1] / 2)  # E[σ²] = E[exp f₁]


@dataclass(frozen=True, kw_only=True)
class DVIOptions(GaussianGuideOptions):
    """Options of ``dvi``: those of the Gaussian guides, and ``covariance``
    (``"diagonal"``: units independent; ``"full"``: each layer's covariance across units,
    per row, quadratic in the layer's width). ``backend="pyro"`` steps with Pyro's
    ``SVI.step`` instead of the compiled step."""

    covariance: str = "diagonal"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_choice("covariance", COVARIANCES)
        if self.num_particles != 1:
            raise ValueError("dvi draws no particles: its ELBO is deterministic")
        if self.vectorize_particles:
            raise ValueError("dvi draws no particles: vectorize_particles does not apply")


def deterministic_elbo(model, options: DVIOptions) -> DeterministicELBO:
    """The loss of ``dvi``, checked against ``model`` before any step."""
    return DeterministicELBO(find_network(model), covariance=options.covariance)


def precheck(model, x: torch.Tensor, y: torch.Tensor, options: DVIOptions) -> None:
    """Refuse, before any chain runs, a model whose layers or likelihood the closed form
    does not cover (building its ELBO checks both)."""
    deterministic_elbo(model, options)
