"""What every inference method returns: draws laid out as (chain, draw, *site_shape).

Example:
    >>> import torch
    >>> from pyro_bnn import fit
    >>> from pyro_bnn.zoo.bayesian_linear_regression import BayesianLinearRegression
    >>> x = torch.randn(20, 1); y = 2 * x[:, 0]
    >>> post = fit(BayesianLinearRegression(in_features=1), x, y, method="map",
    ...            num_steps=200, lr=0.05, progress_bar=False)
    >>> post.predict(torch.zeros(3, 1), num_samples=10).mean.shape
    torch.Size([3])
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyro
import torch

from pyro_bnn.replay import ObsDraws, replay

__all__ = ["Posterior", "Prediction"]


@dataclass
class Prediction:
    """Predictive draws and summaries for a batch of inputs.

    ``samples``: draws of ``obs`` (num_samples, rows). ``mean``/``std``: predictive mean
    and standard deviation (for classifiers, of the label). For Gaussian-type likelihoods
    ``epistemic_var`` is the variance of the network's mean over draws and
    ``aleatoric_var`` the mean noise variance; they add up to ``std**2``. Classifiers get
    ``probs`` (rows, classes), the posterior-averaged class probabilities.
    """

    samples: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    epistemic_var: torch.Tensor | None = None
    aleatoric_var: torch.Tensor | None = None
    probs: torch.Tensor | None = None
    draws: ObsDraws | None = field(default=None, repr=False)

    def quantiles(self, q: float | list[float]) -> torch.Tensor:
        """Quantiles of the predictive draws, shape (len(q), rows) or (rows,)."""
        return torch.quantile(
            self.samples.to(torch.float64), torch.as_tensor(q, dtype=torch.float64), dim=0
        ).to(self.mean.dtype)

    def interval(self, level: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
        """Central predictive interval holding ``level`` of the mass."""
        if not 0 < level < 1:
            raise ValueError(f"interval level must be in (0, 1), got {level}")
        lower, upper = self.quantiles([(1 - level) / 2, (1 + level) / 2])
        return lower, upper

    @property
    def predicted_class(self) -> torch.Tensor:
        if self.probs is None:
            raise ValueError("predicted_class is only defined for classifiers")
        return self.probs.argmax(-1)


@dataclass(kw_only=True)
class Posterior:
    """Posterior draws of every latent site, the model and the method's own objects.

    ``draws[site]`` has shape (chain, draw, *site_shape). ``guide`` is the Pyro guide of
    SVI methods, ``mcmc`` the Pyro ``MCMC`` object of each chain run in this process
    (chains run in worker processes leave none); ``losses`` is the SVI loss (negative
    ELBO) history; ``sample_stats`` holds per-draw sampler statistics (chain, draw);
    samplers put their convergence figures (divergences, max R-hat, min ESS) in
    ``diagnostics`` and the warnings those raised in ``warnings``.
    ``param_state`` is this fit's own Pyro parameter store, entered whenever the model or
    guide runs, so fits never share parameters by name. ``wall_time`` is the whole fit;
    ``timings`` splits out the method's loop (``steps_s`` for SVI, ``sampling_s`` for MCMC).
    """

    model: Callable
    method: str
    draws: dict[str, torch.Tensor]
    x_train: torch.Tensor
    y_train: torch.Tensor
    guide: Any = None
    mcmc: list = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    sample_stats: dict[str, np.ndarray] = field(default_factory=dict)
    diagnostics: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    param_state: dict = field(default_factory=lambda: {"params": {}, "constraints": {}})
    options: dict[str, Any] = field(default_factory=dict)
    wall_time: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def num_chains(self) -> int:
        return next(iter(self.draws.values())).shape[0]

    @property
    def num_draws(self) -> int:
        return next(iter(self.draws.values())).shape[1]

    @contextlib.contextmanager
    def pyro_context(self) -> Iterator[None]:
        """Enter this fit's parameter store (and leave the caller's untouched)."""
        with pyro.get_param_store().scope(self.param_state):
            yield

    def flat_draws(self, num_samples: int | None = None) -> dict[str, torch.Tensor]:
        """Draws with chains merged, (num_samples, *site_shape).

        ``None`` keeps all; fewer are thinned evenly; more repeat the draws in turn (a MAP
        posterior has a single draw).
        """
        total = self.num_chains * self.num_draws
        if num_samples is None:
            index = torch.arange(total)
        elif num_samples < 1:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        elif num_samples <= total:
            index = torch.linspace(0, total - 1, num_samples).round().long()
        else:
            index = torch.arange(num_samples) % total
        return {k: v.reshape(total, *v.shape[2:])[index] for k, v in self.draws.items()}

    def replay(self, x, y=None, *, num_samples: int | None = None, **kwargs) -> ObsDraws:
        """The observed site under each draw (see :func:`pyro_bnn.replay.replay`)."""
        from pyro_bnn.validation import as_inputs, as_targets

        x = as_inputs(x, name="x")
        y = None if y is None else as_targets(y, rows=len(x), name="y")
        with self.pyro_context():
            return replay(self.model, self.flat_draws(num_samples), x, y, **kwargs)

    def predict(
        self,
        x,
        *,
        num_samples: int | None = 1000,
        row_batch: int = 1000,
        draw_chunk: int = 500,
        seed: int | None = None,
    ) -> Prediction:
        """Predictive draws and summaries at ``x``, vectorised over draws, batched over rows."""
        if seed is not None:
            pyro.set_rng_seed(seed)
        obs = self.replay(x, num_samples=num_samples, row_batch=row_batch, draw_chunk=draw_chunk)
        if obs.probs is not None:
            probs = obs.probs.mean(0)
            labels = torch.arange(probs.shape[-1], dtype=probs.dtype)
            mean = probs @ labels
            std = (probs @ labels**2 - mean**2).clamp_min(0).sqrt()
            return Prediction(samples=obs.value, mean=mean, std=std, probs=probs, draws=obs)
        epistemic = obs.loc.var(0, unbiased=False)
        aleatoric = obs.noise_var.mean(0)
        return Prediction(
            samples=obs.value,
            mean=obs.loc.mean(0),
            std=(epistemic + aleatoric).sqrt(),
            epistemic_var=epistemic,
            aleatoric_var=aleatoric,
            draws=obs,
        )

    def log_likelihood(self, x, y, **kwargs) -> torch.Tensor:
        """Pointwise log p(y_i | draw), shaped (chain, draw, rows)."""
        obs = self.replay(x, y, **kwargs)
        return obs.log_lik.reshape(self.num_chains, self.num_draws, -1)
