"""The one method registry: each inference method is one small :class:`Method` in an
explicit table.

A method is its name, its keyword-only options type (an option it does not use is an
error naming it), how it runs one chain from a seed, whether its draws are meant to
represent the posterior (then R-hat, ESS and divergences are checked and warned about, as
for any sampler), and how it predicts: by replaying the draws through the model, or by
its own predictive (Laplace's linearised network), which also gives the draws for ArviZ.

Example:
    >>> REGISTRY["ensemble"].options.__name__
    'EnsembleOptions'
    >>> [name for name, m in REGISTRY.items() if m.samples_posterior][:3]
    ['nuts', 'hmc', 'rwm']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from pyro_bnn.infer import dropout, dvi, laplace, mcmc, sgmcmc, svi, swag
from pyro_bnn.infer.options import Options

__all__ = ["REGISTRY", "Method", "method"]


@dataclass(frozen=True)
class Method:
    """One inference method.

    ``run_chain(model, x, y, *, name, seed, options, shared, progress_bar) -> Chain`` runs
    one chain in the calling process (the chain runner has seeded it and entered a fresh
    parameter store); ``shared`` is one dict per process for what its chains may share.
    ``samples_posterior``: the draws should represent the posterior, so R-hat, ESS and
    divergences are checked and failures warned about (for optimisers they are recorded
    only, and the loss history is checked instead). ``precheck(model, x, y, options)``,
    if any, refuses before any chain runs what the method cannot do with this model.
    ``predictive(options)``, if any, gives the method's own predictive where it replaces
    replaying the draws through the model (:class:`~pyro_bnn.posterior.MethodPredictive`,
    such as Laplace's linearised network), or None. ``data_parallel``: its chains can
    run data-parallel over ranks (SVI and SG-MCMC) (:mod:`pyro_bnn.distributed`).
    """

    name: str
    options: type[Options]
    run_chain: Callable
    samples_posterior: bool
    summary: str
    precheck: Callable | None = None
    predictive: Callable | None = None
    data_parallel: bool = False


def _svi(name: str, options: type[Options], guide: Callable, summary: str) -> Method:
    run = partial(svi.run_svi_chain, build_guide=guide)
    return Method(name, options, run, False, summary, precheck=svi.precheck, data_parallel=True)


def _mcmc(name: str, options: type[Options], kernel: Callable, summary: str) -> Method:
    return Method(name, options, partial(mcmc.run_mcmc_chain, build_kernel=kernel), True, summary)


def _sgmcmc(name: str, options: type[Options], dynamics: type, summary: str) -> Method:
    run = partial(sgmcmc.run_sgmcmc_chain, dynamics=dynamics)
    return Method(name, options, run, True, summary, data_parallel=True)


_TABLE: tuple[Method, ...] = (
    _svi("map", svi.SVIOptions, svi.map_guide, "maximum a posteriori: AutoDelta"),
    _svi(
        "ensemble",
        svi.EnsembleOptions,
        svi.map_guide,
        "deep ensemble: num_members MAP fits as chains (Lakshminarayanan et al. 2017)",
    ),
    _svi(
        "meanfield",
        svi.MeanFieldOptions,
        svi.meanfield_guide,
        "mean-field Gaussian VI: AutoDiagonalNormal (Bayes by Backprop)",
    ),
    _svi(
        "multiplicative",
        svi.MeanFieldOptions,
        svi.multiplicative_guide,
        "q(w) = N(θ, αθ²) on log-uniform sites (variational dropout)",
    ),
    _svi(
        "dwp",
        svi.ImplicitPriorOptions,
        svi.implicit_prior_guide,
        "deep weight prior: mean-field q(w) and reverse model r(z | w)",
    ),
    _svi(
        "lowrank",
        svi.LowRankOptions,
        svi.lowrank_guide,
        "low-rank plus diagonal Gaussian VI: AutoLowRankMultivariateNormal",
    ),
    _svi(
        "fullrank",
        svi.GaussianGuideOptions,
        svi.fullrank_guide,
        "full-covariance Gaussian VI: AutoMultivariateNormal",
    ),
    Method(
        "dvi",
        dvi.DVIOptions,
        partial(
            svi.run_svi_chain,
            build_guide=svi.meanfield_guide,
            build_loss=dvi.deterministic_elbo,
            build_state=dvi.guide_state,
        ),
        False,
        "deterministic VI: meanfield's guide, ELBO by moment propagation (Wu et al. 2019)",
        precheck=dvi.precheck,
        predictive=dvi.dvi_predictive,
        data_parallel=True,
    ),
    Method(
        "laplace",
        laplace.LaplaceOptions,
        laplace.run_laplace_chain,
        False,
        "Laplace: a Gaussian at the MAP with GGN/Fisher curvature (full, diag, kron, "
        "lowrank), GLM predictive, evidence-tuned prior",
        precheck=laplace.precheck,
        predictive=laplace.laplace_predictive,
    ),
    Method(
        "swa",
        swag.SWAOptions,
        swag.run_swag_chain,
        False,
        "stochastic weight averaging: SGD from the MAP, the mean of its epochs' iterates",
    ),
    Method(
        "swag",
        swag.SWAGOptions,
        swag.run_swag_chain,
        False,
        "SWAG: a Gaussian from the SGD iterates' mean, diagonal and last-K deviations",
    ),
    Method(
        "multiswag",
        swag.MultiSWAGOptions,
        swag.run_swag_chain,
        False,
        "MultiSWAG: num_members SWAG runs from independent MAP fits, as chains",
    ),
    Method(
        "mcdropout",
        dropout.MCDropoutOptions,
        dropout.run_dropout_chain,
        False,
        "MC dropout: W = M·diag(z), z ~ Bernoulli(1 − p) per input unit (Gal & Ghahramani "
        "2016), as a Pyro guide",
        precheck=dropout.precheck,
    ),
    _mcmc("nuts", mcmc.NUTSOptions, mcmc.nuts_kernel, "Pyro's NUTS"),
    _mcmc("hmc", mcmc.HMCOptions, mcmc.hmc_kernel, "Pyro's HMC"),
    _mcmc("rwm", mcmc.RWMOptions, mcmc.rwm_kernel, "random-walk Metropolis"),
    _sgmcmc("sgld", sgmcmc.SGLDOptions, sgmcmc.Langevin, "stochastic-gradient Langevin"),
    _sgmcmc("sghmc", sgmcmc.SGHMCOptions, sgmcmc.Hamiltonian, "stochastic-gradient HMC"),
    _sgmcmc("sgnht", sgmcmc.SGNHTOptions, sgmcmc.NoseHoover, "SG Nosé-Hoover thermostat"),
    _sgmcmc("csgld", sgmcmc.CyclicalSGLDOptions, sgmcmc.Langevin, "cyclical SGLD"),
    _sgmcmc("csghmc", sgmcmc.CyclicalSGHMCOptions, sgmcmc.Hamiltonian, "cyclical SGHMC"),
)

REGISTRY: dict[str, Method] = {m.name: m for m in _TABLE}


def method(name: str) -> Method:
    """The method called ``name``, or an error listing the known ones."""
    if not isinstance(name, str) or name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(REGISTRY)}")
    return REGISTRY[name]
