"""Likelihoods: each one owns the ``data`` plate and the observed site ``obs``.

A model computes its network output and hands it to a likelihood::

    def forward(self, x, y=None):
        return self.likelihood(self.net(x).squeeze(-1), y)

The plate's size is the full dataset size: either ``num_data`` given to the likelihood,
or the rows seen; :class:`ScaleDataPlate` (used by ``fit`` for minibatches) rescales
sites in the ``data`` plate to the full dataset, for any model that follows this contract.

Example:
    >>> import torch, pyro
    >>> lik = Gaussian(scale=0.1)
    >>> tr = pyro.poutine.trace(lik).get_trace(torch.zeros(4), torch.ones(4))
    >>> tr.nodes["obs"]["fn"].batch_shape
    torch.Size([4])
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import pyro
import pyro.distributions as dist
import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import effectful
from pyro.poutine.util import is_validation_enabled

__all__ = [
    "DATA_PLATE",
    "OBS_SITE",
    "Bernoulli",
    "Categorical",
    "Gaussian",
    "HeteroscedasticGaussian",
    "Likelihood",
    "ScaleDataPlate",
    "network_output",
]

DATA_PLATE = "data"
OBS_SITE = "obs"


def _network_output(likelihood: Likelihood, output: torch.Tensor) -> torch.Tensor:
    return output


network_output = effectful(_network_output, type="network_output")
network_output.__doc__ = """The network output a likelihood receives, as a Pyro effect: a
handler may read it (the linearised Laplace predictive needs the raw output, before a
distribution normalises it) or replace it. With no handler it is the output itself."""


class Likelihood(ABC):
    """Base class: draws the observed site ``obs`` inside the ``data`` plate."""

    def __init__(self, *, num_data: int | None = None) -> None:
        if num_data is not None and num_data < 1:
            raise ValueError(f"num_data must be a positive integer, got {num_data}")
        self.num_data = num_data

    @abstractmethod
    def distribution(self, output: torch.Tensor) -> dist.Distribution:
        """The distribution of one batch of targets given the network output."""

    @abstractmethod
    def check_targets(self, y: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """Validate ``y`` against the output and return it in the dtype the site needs."""

    def num_rows(self, output: torch.Tensor) -> int:
        return output.shape[-1]

    def __call__(self, output: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        rows = self.num_rows(output)
        size = self.num_data or rows
        if size < rows:
            raise ValueError(f"batch has {rows} rows but num_data={size} is smaller")
        subsample = torch.arange(rows, device=output.device) if size != rows else None
        output = network_output(self, output)
        if y is not None:
            y = self.check_targets(y, output)
        distribution = self.distribution(output)  # global sites (noise) stay outside the plate
        with pyro.plate(DATA_PLATE, size=size, subsample=subsample):
            return pyro.sample(OBS_SITE, distribution, obs=y)


def _check_rows(y: torch.Tensor, rows: int, what: str) -> None:
    if y.dim() != 1 or y.shape[0] != rows:
        raise ValueError(
            f"{what} targets must have shape ({rows},) to match the network output, "
            f"got {tuple(y.shape)}"
        )


class Gaussian(Likelihood):
    """y ~ N(f(x), σ²) with σ fixed (``scale``) or learned (``precision_prior`` on 1/σ²).

    With neither given, the noise is learned with a Gamma(1, 0.05) prior on the precision
    (mean 20, i.e. σ ≈ 0.22 on standardised targets, heavy right tail). The learned
    precision is the latent site ``precision``. ``learn_prior=True`` (empirical Bayes) makes
    the Gamma prior's rate the Pyro parameter ``precision_prior_rate``, started at the
    given prior's rate, which SVI learns with the ELBO.
    """

    def __init__(
        self,
        *,
        scale: float | None = None,
        precision_prior: dist.Distribution | None = None,
        learn_prior: bool = False,
        num_data: int | None = None,
    ) -> None:
        super().__init__(num_data=num_data)
        if scale is not None and precision_prior is not None:
            raise ValueError("give either a fixed noise scale or a precision prior, not both")
        if learn_prior and scale is not None:
            raise ValueError("learn_prior=True learns the precision prior: give no fixed scale")
        if learn_prior and precision_prior is not None:
            if not isinstance(precision_prior, dist.Gamma):
                raise ValueError("learn_prior=True needs a Gamma precision prior")
        self.learn_prior = learn_prior
        if scale is not None and not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"noise scale must be positive and finite, got {scale}")
        if scale is None and precision_prior is None:
            precision_prior = dist.Gamma(torch.tensor(1.0), torch.tensor(0.05))
        self.scale = scale
        self.precision_prior = precision_prior

    @property
    def learned(self) -> bool:
        return self.precision_prior is not None

    def noise_scale(self, output: torch.Tensor) -> torch.Tensor:
        if self.precision_prior is None:
            return output.new_tensor(self.scale)
        prior = self.precision_prior
        if self.learn_prior:
            rate = pyro.param(
                "precision_prior_rate", lambda: prior.rate.detach().clone(),
                constraint=dist.constraints.positive,
            )  # fmt: skip
            prior = dist.Gamma(prior.concentration, rate)
        # batched draws arrive as (*draws, 1): they broadcast against (*draws, rows)
        return pyro.sample("precision", prior).rsqrt()

    def distribution(self, output: torch.Tensor) -> dist.Distribution:
        return dist.Normal(output, self.noise_scale(output))

    def check_targets(self, y: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        _check_rows(y, self.num_rows(output), "regression")
        if not torch.is_floating_point(y):
            y = y.to(output.dtype)
        return y


class HeteroscedasticGaussian(Likelihood):
    """y ~ N(μ(x), σ(x)²) with both heads from the network: ``f`` has shape
    (..., rows, 2) and μ = f[..., 0]. ``link="softplus"``: σ = softplus(f[..., 1]) +
    ``min_scale`` (Nix & Weigend 1994; Lakshminarayanan et al. 2017 use softplus and a
    floor too); ``link="exp"``: f[..., 1] is log σ² (Wu et al. 2019, whose deterministic
    VI needs it: its expectation under a Gaussian output has a closed form).

    Example:
        >>> import torch
        >>> lik = HeteroscedasticGaussian()
        >>> lik.distribution(torch.tensor([[1.0, 0.0]])).mean
        tensor([1.])
    """

    def __init__(
        self, *, min_scale: float = 1e-3, link: str = "softplus", num_data: int | None = None
    ) -> None:
        super().__init__(num_data=num_data)
        if not (math.isfinite(min_scale) and min_scale >= 0):
            raise ValueError(f"min_scale must be finite and non-negative, got {min_scale}")
        if link not in ("softplus", "exp"):
            raise ValueError(f"link must be 'softplus' or 'exp', got {link!r}")
        self.min_scale, self.link = min_scale, link

    def num_rows(self, output: torch.Tensor) -> int:
        return output.shape[-2]

    def distribution(self, output: torch.Tensor) -> dist.Distribution:
        if output.shape[-1] != 2:
            raise ValueError(
                "a heteroscedastic Gaussian needs the network's last dimension to be 2 "
                f"(mean and scale heads), got output of shape {tuple(output.shape)}"
            )
        if self.link == "exp":
            return dist.Normal(output[..., 0], torch.exp(0.5 * output[..., 1]))
        scale = torch.nn.functional.softplus(output[..., 1]) + self.min_scale
        return dist.Normal(output[..., 0], scale)

    def check_targets(self, y: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        _check_rows(y, self.num_rows(output), "regression")
        if not torch.is_floating_point(y):
            y = y.to(output.dtype)
        return y


class Categorical(Likelihood):
    """y ~ Categorical(logits=f(x)); ``f`` has shape (..., rows, classes)."""

    def num_rows(self, output: torch.Tensor) -> int:
        return output.shape[-2]

    def distribution(self, output: torch.Tensor) -> dist.Distribution:
        return dist.Categorical(logits=output)

    def check_targets(self, y: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        _check_rows(y, self.num_rows(output), "classification")
        return _integer_labels(y, num_classes=output.shape[-1])


class Bernoulli(Likelihood):
    """y ~ Bernoulli(logits=f(x)) with labels in {0, 1}."""

    def distribution(self, output: torch.Tensor) -> dist.Distribution:
        return dist.Bernoulli(logits=output)

    def check_targets(self, y: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        _check_rows(y, self.num_rows(output), "binary")
        return _integer_labels(y, num_classes=2).to(output.dtype)


def _integer_labels(y: torch.Tensor, *, num_classes: int) -> torch.Tensor:
    if not is_validation_enabled():  # as Pyro's own checks; a traced graph needs this
        return y.long()
    if torch.is_floating_point(y):
        if not torch.all(y == y.round()):
            raise ValueError("class labels must be whole numbers")
        y = y.long()
    elif y.dtype == torch.bool:
        y = y.long()
    bad = (y < 0) | (y >= num_classes)
    if bool(bad.any()):
        unknown = sorted(set(y[bad].tolist()))[:5]
        raise ValueError(f"labels {unknown} are outside the model's classes 0..{num_classes - 1}")
    return y


class ScaleDataPlate(Messenger):
    """Scale every site in the ``data`` plate to a dataset of ``num_data`` rows.

    A plate declared with ``size`` rows already scales by ``size / rows``; this handler adds
    ``num_data / size``, so both ``pyro.plate("data", len(batch))`` and the subsampled idiom
    ``pyro.plate("data", size=N, subsample=...)`` end up scaled by ``num_data / rows``.
    """

    def __init__(self, num_data: int) -> None:
        super().__init__()
        self.num_data = num_data

    def _process_message(self, msg: dict) -> None:
        if msg["type"] != "sample":
            return
        for frame in msg["cond_indep_stack"]:
            declared = frame.full_size or frame.size  # the plate's size, before subsampling
            if frame.name == DATA_PLATE and declared != self.num_data:
                msg["scale"] = msg["scale"] * (self.num_data / declared)
