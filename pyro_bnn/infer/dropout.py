"""MC dropout (Gal & Ghahramani 2016) as a Pyro guide: ``mcdropout``.

The guide (:class:`~pyro_bnn.guides.AutoDropout`) draws each Bayesian layer's weight as
W = M · diag(z), z ~ Bernoulli(1 − ``dropout_rate``) per input unit, and every other latent
as a point. Pyro's ELBO of that guide is the dropout objective: the data term under the
sampled masks plus log p(W), for a Gaussian prior N(0, 1/l²) the weight decay
(1 − p) l² ‖M‖² / 2 that Gal's derivation implies. The model precision τ is the noise
precision of a Gaussian likelihood: ``tau`` fixes it (the model must learn its noise, a
``precision`` site), else it is the model's own (fixed, or a point estimate). The Posterior
holds ``num_draws`` mask draws, T stochastic forward passes, so ``predict`` and
``to_inference_data`` work as for every other method.

Example:
    >>> import torch
    >>> from pyro_bnn import fit, zoo
    >>> model = zoo.build("mlp-regression", in_features=1, hidden=(16,))
    >>> x = torch.linspace(-1, 1, 40)[:, None]
    >>> post = fit(model, x, torch.sin(3 * x[:, 0]), method="mcdropout", dropout_rate=0.1,
    ...            tau=100.0, num_steps=300, num_draws=50, progress_bar=False, seed=0)
    >>> float(post.draws["precision"].unique())
    100.0
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from pyro import poutine

from pyro_bnn.guides import AutoDropout, dropout_sites
from pyro_bnn.infer.chains import Chain
from pyro_bnn.infer.svi import SVIOptions, run_svi_chain
from pyro_bnn.init import init_to_fan_in, trace_at_support_zero

__all__ = ["MCDropoutOptions", "dropout_guide", "precheck", "run_dropout_chain"]

NOISE_SITE = "precision"


@dataclass(frozen=True, kw_only=True)
class MCDropoutOptions(SVIOptions):
    """Options of ``mcdropout``: ``map``'s schedule (the weights start from the fan-in
    initialisation, as a dropout network's training does, not from a prior draw: the
    weak priors of dropout's weight decay would start them far too large), the
    ``dropout_rate`` p in [0, 1) (and
    ``input_dropout_rate`` for the first layer's inputs, default p), the model precision
    ``tau`` (None: the model's own noise), and ``num_draws`` T."""

    init_loc_fn: Callable = init_to_fan_in
    dropout_rate: float = 0.05
    input_dropout_rate: float | None = None
    tau: float | None = None
    num_draws: int = 1000

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("dropout_rate", "input_dropout_rate"):
            rate = getattr(self, name)
            if rate is not None and not 0 <= rate < 1:
                raise ValueError(f"{name} must be in [0, 1), got {rate}")

    @classmethod
    def allow_zero(cls) -> frozenset[str]:
        return super().allow_zero() | {"dropout_rate", "input_dropout_rate"}

    @property
    def draws_per_chain(self) -> int:
        return self.num_draws


def dropout_guide(model: Callable, o: MCDropoutOptions) -> AutoDropout:
    return AutoDropout(model, dropout_rate=o.dropout_rate, input_dropout_rate=o.input_dropout_rate,
                       init_loc_fn=o.init_loc_fn)  # fmt: skip


def precheck(model, x: torch.Tensor, y: torch.Tensor, options: MCDropoutOptions) -> None:
    """Refuse a model without Bayesian layers to drop, and ``tau`` for a model whose noise
    is not a learned precision."""
    trace = trace_at_support_zero(model, x[:2], y[:2])
    if not dropout_sites(trace):
        raise ValueError(
            "mcdropout drops the input units of Bayesian Linear or Conv2d layers (latent "
            "sites '<layer>.weight' of shape (out, in, ...)); this model has none"
        )
    if options.tau is not None:
        site = trace.nodes.get(NOISE_SITE)
        if site is None or site["type"] != "sample" or site["is_observed"]:
            raise ValueError(
                "tau sets the noise precision of a Gaussian likelihood that learns it (a "
                f"'{NOISE_SITE}' site); this model has none (its noise is fixed, or it is "
                "not a regression): leave tau out"
            )


def run_dropout_chain(
    model: Callable, x: torch.Tensor, y: torch.Tensor, *, options: MCDropoutOptions,
    **kwargs: Any,
) -> Chain:  # fmt: skip
    """One MC-dropout fit: SVI of the dropout guide, then ``num_draws`` mask draws."""
    if options.tau is None:
        return run_svi_chain(model, x, y, options=options, build_guide=dropout_guide, **kwargs)
    tau = torch.tensor(float(options.tau))
    conditioned = poutine.condition(model, data={NOISE_SITE: tau})
    chain = run_svi_chain(conditioned, x, y, options=options, build_guide=dropout_guide,
                          **kwargs)  # fmt: skip
    chain.draws[NOISE_SITE] = tau.expand(1, options.num_draws).clone()
    return chain
