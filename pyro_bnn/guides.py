"""Autoguides beyond Pyro's own.

:class:`AutoImplicitPriorNormal` is the guide of an implicit hierarchical prior, the deep
weight prior: a mean-field Gaussian on the weights, then a reverse model r(z | w) for the
prior's per-kernel latents.

:class:`AutoMultiplicativeNormal` is the multiplicative-noise family of Molchanov et al.
(2017, sparse variational dropout): w = θ (1 + √α ε), i.e. q(w) = N(θ, α θ²), for the
sites whose prior is the improper log-uniform. Under that prior KL(q ‖ p) depends on α
alone (up to a constant), so it is finite and a weight with large α (SNR |θ|/σ = 1/√α)
can be pruned. Every other site keeps ``AutoNormal``'s own (μ, softplus ρ) Gaussian.

:class:`AutoDropout` is MC dropout (Gal & Ghahramani 2016) as a guide: masked point
weights, whose Pyro ELBO is the dropout objective.

Example:
    >>> import torch
    >>> from pyro_bnn.priors import LogUniformPrior
    >>> from pyro_bnn.init import init_to_fan_in
    >>> from pyro_bnn.zoo import build
    >>> model = build("mlp-regression", in_features=2, hidden=(3,), prior=LogUniformPrior())
    >>> guide = AutoMultiplicativeNormal(model, init_loc_fn=init_to_fan_in, init_scale=0.1)
    >>> _ = guide(torch.randn(4, 2), torch.randn(4))
    >>> loc, scale = guide._get_loc_and_scale("net.0.weight")
    >>> torch.allclose(scale, 0.1 * loc.abs())
    True
"""

from __future__ import annotations

import copy
from contextlib import ExitStack
from operator import attrgetter

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.autoguide import AutoDelta, AutoNormal
from pyro.infer.autoguide.guides import prototype_hide_fn
from pyro.infer.autoguide.utils import deep_setattr
from pyro.nn import PyroModule
from pyro.nn.module import to_pyro_module_

from pyro_bnn.dwp import REVERSE_MODEL
from pyro_bnn.priors import ImproperLogUniform, base_distribution

__all__ = ["AutoDropout", "AutoImplicitPriorNormal", "AutoMultiplicativeNormal", "dropout_sites"]


def dropout_sites(trace) -> list[str]:
    """The weight sites of Bayesian layers (``<layer>.weight`` with at least two dims:
    (out, in, …), Linear and Conv2d), whose input units MC dropout drops."""
    return [
        name for name, site in trace.iter_stochastic_nodes()
        if name.rpartition(".")[2] == "weight" and site["value"].dim() >= 2
    ]  # fmt: skip


class AutoDropout(AutoDelta):
    """MC dropout as a Pyro guide (Gal & Ghahramani 2016): each Bayesian layer's weight is
    W = M · diag(z), z ~ Bernoulli(1 − ``dropout_rate``) per input unit, drawn afresh at
    every call (the first layer's, on the data, at ``input_dropout_rate`` if given; layers
    in the order the model samples them); every other latent is a point (``AutoDelta``).
    The sites are Dirac deltas, so Pyro's ELBO of this guide is the dropout objective: the
    data term under the masks plus log p(M · diag(z)), which for a Gaussian prior
    N(0, 1/l²) is Gal's weight decay (1 − p) l² ‖M‖² / 2 in expectation.

    Example:
        >>> import torch
        >>> from pyro_bnn.zoo import build
        >>> model = build("mlp-regression", in_features=3, hidden=(4,), noise_scale=0.1)
        >>> guide = AutoDropout(model, dropout_rate=0.5)
        >>> w = guide(torch.randn(5, 3), torch.randn(5))["net.0.weight"]
        >>> bool(((w == 0).all(0) | (w != 0).all(0)).all())  # whole input columns dropped
        True
    """

    def __init__(
        self, model, *, dropout_rate: float, input_dropout_rate: float | None = None, **kwargs
    ) -> None:
        for name, rate in (
            ("dropout_rate", dropout_rate),
            ("input_dropout_rate", input_dropout_rate),
        ):
            if rate is not None and not 0 <= rate < 1:
                raise ValueError(f"{name} must be in [0, 1), got {rate}")
        self.dropout_rate = dropout_rate
        self.input_dropout_rate = dropout_rate if input_dropout_rate is None else input_dropout_rate
        super().__init__(model, **kwargs)

    def _setup_prototype(self, *args, **kwargs) -> None:
        super()._setup_prototype(*args, **kwargs)
        masked = dropout_sites(self.prototype_trace)
        # the first layer's inputs are the data: they may have their own rate
        self.rates = {name: self.input_dropout_rate if i == 0 else self.dropout_rate
                      for i, name in enumerate(masked)}  # fmt: skip
        self.masked = set(masked)
        if not self.masked:
            raise ValueError(
                "mcdropout drops the input units of Bayesian Linear or Conv2d layers (latent "
                "sites '<layer>.weight' of shape (out, in, ...)); this model has none"
            )

    def _mask(self, value: torch.Tensor, rate: float) -> torch.Tensor:
        keep = torch.full(value.shape[1:2], 1 - rate, dtype=value.dtype)
        mask = torch.bernoulli(keep)
        return mask.reshape(1, -1, *([1] * (value.dim() - 2)))

    def point_values(self) -> dict[str, torch.Tensor]:
        """One draw of every site: the masked weights and the other points."""
        values = {}
        for name, _ in self.prototype_trace.iter_stochastic_nodes():
            value = attrgetter(name)(self)
            if name in self.masked:
                value = value * self._mask(value, self.rates[name])
            values[name] = value
        return values

    def forward(self, *args, **kwargs) -> dict:
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        plates = self._create_plates(*args, **kwargs)
        values = self.point_values()
        result = {}
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            with ExitStack() as stack:
                for frame in site["cond_indep_stack"]:
                    if frame.vectorized:
                        stack.enter_context(plates[frame.name])
                event_dim = site["fn"].event_dim
                result[name] = pyro.sample(name, dist.Delta(values[name], event_dim=event_dim))
        return result


class AutoMultiplicativeNormal(AutoNormal):
    """``AutoNormal`` whose log-uniform sites have scale √α |θ| (``init_scale`` is the
    initial √α); its ``scales`` parameters hold √α there."""

    def _get_loc_and_scale(self, name: str):
        loc, scale = super()._get_loc_and_scale(name)
        if isinstance(
            base_distribution(self.prototype_trace.nodes[name]["fn"]), ImproperLogUniform
        ):
            return loc, scale * loc.abs()
        return loc, scale


class AutoImplicitPriorNormal(AutoNormal):
    """The guide of a hierarchical implicit prior such as the deep weight prior
    (:mod:`pyro_bnn.dwp`): ``AutoNormal``'s fully factorised Gaussian q(w | θ) on every
    latent except the prior's auxiliary latents z, which it draws after the weights from a
    reverse model, z ~ r(z | w; ψ).

    A latent site is auxiliary when its ``infer`` dict carries
    ``{"reverse_model": {"weight": <weight site>, "encoder": <nn.Module>}}``; the encoder
    maps the weight to (loc, scale) of a diagonal Gaussian over z. The guide uses the
    prior's encoder as it is, frozen (``train_reverse_model=False``, as Atanov et al.'s
    code), or trains its own copy of it, so that ψ starts at the prior's encoder. With the
    model this makes Pyro's ELBO the auxiliary bound
    L_aux = E_q(w) r(z|w) [log p(D | w) + log p(w | z) + log p(z) − log q(w) − log r(z | w)].

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from pyro_bnn.bayesianize import bayesianize
        >>> from pyro_bnn.dwp import DeepWeightPrior, KernelVAE
        >>> net = bayesianize(nn.Sequential(nn.Conv2d(1, 2, 3)),
        ...                   DeepWeightPrior({"0": KernelVAE(kernel_size=3, z_dim=2, hidden=4)}))
        >>> guide = AutoImplicitPriorNormal(lambda x: net(x))
        >>> sorted(guide(torch.zeros(1, 1, 4, 4)))
        ['0.weight', '0.weight.z']
    """

    def __init__(self, model, *, train_reverse_model: bool = False, **kwargs) -> None:
        self.train_reverse_model = train_reverse_model
        super().__init__(model, **kwargs)

    def _setup_prototype(self, *args, **kwargs) -> None:
        found: dict[str, dict] = {}

        def hide(msg: dict) -> bool:
            annotation = (msg.get("infer") or {}).get(REVERSE_MODEL)
            if annotation is not None and msg["type"] == "sample":
                found[msg["name"]] = {**annotation, "event_dim": msg["fn"].event_dim}
                return True
            return prototype_hide_fn(msg)

        self._prototype_hide_fn = hide
        super()._setup_prototype(*args, **kwargs)
        if not found:
            raise ValueError(
                "the model has no implicit-prior latents (sites annotated with a reverse "
                "model); this guide is for priors such as pyro_bnn.dwp.DeepWeightPrior"
            )
        self.reverse_models = PyroModule()
        self._reverse_sites: dict[str, tuple[str, int]] = {}
        for name, annotation in found.items():
            weight = annotation["weight"]
            if weight not in self.prototype_trace.nodes:
                raise ValueError(f"the latent {name!r} refers to an unknown weight {weight!r}")
            encoder = copy.deepcopy(annotation["encoder"])
            if self.train_reverse_model:
                encoder.requires_grad_(True).train()
                to_pyro_module_(encoder)  # its parameters become Pyro params, trained by SVI
            else:
                encoder.requires_grad_(False).eval()
            deep_setattr(self.reverse_models, weight, encoder)
            self._reverse_sites[name] = (weight, annotation["event_dim"])

    def forward(self, *args, **kwargs) -> dict:
        result = super().forward(*args, **kwargs)
        for name, (weight, event_dim) in self._reverse_sites.items():
            loc, scale = attrgetter(weight)(self.reverse_models)(result[weight])
            result[name] = pyro.sample(name, dist.Normal(loc, scale).to_event(event_dim))
        return result
