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
from typing import Any, Protocol

import numpy as np
import pyro
import torch

from pyro_bnn.device import placed
from pyro_bnn.replay import ObsDraws, replay
from pyro_bnn.validation import as_inputs, as_targets, check_count, check_inputs_like, check_seed

__all__ = ["MethodPredictive", "Posterior", "Prediction", "mix_moments"]


class MethodPredictive(Protocol):
    """A method's own predictive (Laplace's linearised network, DVI's moments).
    ``obs_draws`` gives the observed site under the draws at flat positions ``index``, or
    None to replay the draws through the model; ``moments`` the closed-form summaries
    where they exist (``mean``, ``epistemic_var``, ``aleatoric_var``, or ``probs``), else
    None."""

    def obs_draws(
        self, posterior: Posterior, x: torch.Tensor, y: torch.Tensor | None, *,
        index: torch.Tensor, row_batch: int, log_joint: bool,
    ) -> ObsDraws | None: ...  # fmt: skip

    def moments(
        self, posterior: Posterior, x: torch.Tensor, *, row_batch: int
    ) -> dict[str, torch.Tensor] | None: ...


@dataclass
class Prediction:
    """Predictive draws and summaries for a batch of inputs.

    ``samples``: draws of ``obs`` (num_samples, rows). ``mean``/``std``: predictive mean
    and standard deviation (for classifiers, of the label). For Gaussian-type likelihoods
    ``epistemic_var`` is the variance of the network's mean over draws and
    ``aleatoric_var`` the mean noise variance; they add up to ``std**2``. Classifiers get
    ``probs`` (rows, classes), the posterior-averaged class probabilities. ``gaussian``:
    the predictive is the Gaussian N(mean, std²) in closed form (a method's own
    predictive, such as Laplace's linearised network), and its quantiles are exact; else
    they come from the draws.
    """

    samples: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    epistemic_var: torch.Tensor | None = None
    aleatoric_var: torch.Tensor | None = None
    probs: torch.Tensor | None = None
    draws: ObsDraws | None = field(default=None, repr=False)
    gaussian: bool = False

    def quantiles(self, q: float | list[float]) -> torch.Tensor:
        """Quantiles of the predictive, shape (len(q), rows) or (rows,): of N(mean, std²)
        for a closed-form Gaussian predictive, else of the draws."""
        if self.gaussian:
            levels = torch.as_tensor(q, dtype=torch.float64)
            normal = torch.distributions.Normal(self.mean.double(), self.std.double())
            values = normal.icdf(levels.reshape(*levels.shape, *([1] * self.mean.dim())))
            return values.to(self.mean.dtype)
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

    Built by the chain runner (:func:`pyro_bnn.infer.chains.run_method`) for every method.
    ``draws[site]`` has shape (chain, draw, *site_shape). ``runners`` holds the method's
    own object of each chain run in this process (Pyro's guide for SVI methods, Pyro's
    ``MCMC`` for NUTS/HMC/RWM; chains run in worker processes leave none); ``losses`` the
    loss (negative ELBO) history of each chain of an optimiser, ``losses[chain][step]``;
    ``sample_stats`` per-draw sampler statistics (chain, draw); ``diagnostics`` the
    convergence figures of every method (divergences, max R-hat, min ESS, the loss's
    last-tenth fall) and ``warnings`` the warnings they raised.
    ``param_states`` holds each chain's own Pyro parameter store, entered whenever the
    model runs with that chain's draws, so fits never share parameters by name.
    ``wall_time`` is the whole fit; ``timings`` splits out the method's loops (summed over
    chains). ``states`` holds each chain's picklable method state that ``predictive``, the
    method's own predictive (None: replay the draws), reads.
    """

    model: Callable
    method: str
    draws: dict[str, torch.Tensor]
    x_train: torch.Tensor
    y_train: torch.Tensor
    runners: list = field(default_factory=list)
    losses: list[list[float]] = field(default_factory=list)
    sample_stats: dict[str, np.ndarray] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    param_states: list[dict] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    states: list = field(default_factory=list)
    predictive: MethodPredictive | None = None
    wall_time: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    def save(self, path) -> None:
        """Write this posterior to ``path`` (safetensors and JSON, atomically); read it back
        with :func:`pyro_bnn.load`. See :mod:`pyro_bnn.io`."""
        from pyro_bnn.io import save

        save(self, path)

    @property
    def device(self) -> torch.device:
        """Where the posterior lives (``fit(device=...)``); it predicts there."""
        return self.x_train.device

    @property
    def num_chains(self) -> int:
        return next(iter(self.draws.values())).shape[0]

    @property
    def num_draws(self) -> int:
        return next(iter(self.draws.values())).shape[1]

    @property
    def log_marginal_likelihood(self) -> float | list[float]:
        """The method's estimate of log p(y) (the Laplace evidence): one number, or one per
        chain. A method that makes none raises AttributeError."""
        found = [getattr(state, "log_marginal_likelihood", None) for state in self.states]
        if not found or any(value is None for value in found):
            raise AttributeError(f"method {self.method!r} gives no log marginal likelihood")
        return found[0] if len(found) == 1 else found

    @property
    def guide(self) -> Any:
        """The Pyro guide of a one-chain SVI fit run here (None for other methods); with
        several chains, each chain's guide is in ``runners``."""
        guides = [r for r in self.runners if not isinstance(r, pyro.infer.MCMC)]
        if len(guides) > 1:
            raise ValueError(
                f"this posterior has {len(guides)} chains, each with its own guide: "
                "use posterior.runners[chain]"
            )
        return guides[0] if guides else None

    @property
    def mcmc(self) -> list:
        """Pyro's ``MCMC`` object of each chain run in this process."""
        return [r for r in self.runners if isinstance(r, pyro.infer.MCMC)]

    @contextlib.contextmanager
    def pyro_context(self, chain: int = 0) -> Iterator[None]:
        """Enter chain ``chain``'s parameter store (and leave the caller's untouched)."""
        state = self.param_states[chain] if self.param_states else None
        with pyro.get_param_store().scope(state):
            yield

    def _draw_index(self, num_samples: int | None) -> torch.Tensor:
        total = self.num_chains * self.num_draws
        if num_samples is None:
            return torch.arange(total)
        num_samples = check_count(num_samples, name="num_samples")
        if num_samples <= total:
            return torch.linspace(0, total - 1, num_samples).round().long()
        return torch.arange(num_samples) % total

    def _params_differ(self) -> bool:
        """Whether the chains hold different model parameters (deterministic weights)."""
        states = [s["params"] for s in self.param_states]
        return len(states) > 1 and any(states)

    def flat_draws(self, num_samples: int | None = None) -> dict[str, torch.Tensor]:
        """Draws with chains merged, (num_samples, *site_shape).

        ``None`` keeps all; fewer are thinned evenly; more repeat the draws in turn (a MAP
        posterior has a single draw).
        """
        return self._draws_at(self._draw_index(num_samples))

    def _draws_at(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The draws at flat (chain-major) positions ``index``."""
        total = self.num_chains * self.num_draws
        return {k: v.reshape(total, *v.shape[2:])[index] for k, v in self.draws.items()}

    def replay(
        self, x, y=None, *, num_samples: int | None = None, name: str = "x", **kwargs
    ) -> ObsDraws:
        """The observed site under each draw (see :func:`pyro_bnn.replay.replay`), each
        chain's draws under that chain's parameter store. ``x`` (called ``name`` in
        errors) must have the training inputs' shape per row."""
        with placed(self.device):
            return self._replay(x, y, num_samples=num_samples, name=name, **kwargs)

    def _replay(self, x, y, *, num_samples: int | None, name: str, **kwargs) -> ObsDraws:
        x = as_inputs(x, name=name).to(self.device)
        check_inputs_like(x, self.x_train, name=name)
        y = None if y is None else as_targets(y, rows=len(x), name="y").to(self.device)
        index = self._draw_index(num_samples)
        if self.predictive is not None:
            drawn = self.predictive.obs_draws(
                self, x, y, index=index, row_batch=kwargs.get("row_batch", 1000),
                log_joint=kwargs.get("log_joint", False),
            )  # fmt: skip
            if drawn is not None:
                return drawn
        draws = self._draws_at(index)
        if not self._params_differ():
            with self.pyro_context():
                return replay(self.model, draws, x, y, **kwargs)
        chain_of = index // self.num_draws
        parts = []
        for chain in range(self.num_chains):
            keep = chain_of == chain
            if bool(keep.any()):
                with self.pyro_context(chain):
                    part = {k: v[keep] for k, v in draws.items()}
                    parts.append((keep, replay(self.model, part, x, y, **kwargs)))
        return ObsDraws.gather(parts, len(chain_of))

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
        check_seed(seed)
        if seed is not None:
            pyro.set_rng_seed(seed)
        obs = self.replay(x, num_samples=num_samples, row_batch=row_batch, draw_chunk=draw_chunk)
        closed = None
        if self.predictive is not None:
            with placed(self.device):
                x = as_inputs(x, name="x").to(self.device)
                closed = self.predictive.moments(self, x, row_batch=row_batch)
        if closed is not None:
            return _closed_form_prediction(obs, closed)
        if obs.probs is not None:
            probs = obs.probs.mean(0)
            mean, std = _label_moments(probs)
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

    def log_likelihood(self, x, y, *, row_batch: int = 1000, draw_chunk: int = 500) -> torch.Tensor:
        """Pointwise log p(y_i | draw), shaped (chain, draw, rows)."""
        if y is None:
            raise TypeError("log_likelihood needs y, the targets of the rows of x")
        obs = self.replay(x, y, row_batch=row_batch, draw_chunk=draw_chunk)
        return obs.log_lik.reshape(self.num_chains, self.num_draws, -1)


def _label_moments(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and sd of the class label (0, 1, ...) under class probabilities ``probs``, on
    their device."""
    labels = torch.arange(probs.shape[-1], dtype=probs.dtype, device=probs.device)
    mean = probs @ labels
    return mean, (probs @ labels**2 - mean**2).clamp_min(0).sqrt()


def _closed_form_prediction(obs: ObsDraws, closed: dict[str, torch.Tensor]) -> Prediction:
    """A Prediction whose summaries are a method's closed form; its samples are the draws."""
    if "probs" in closed:
        probs = closed["probs"].to(obs.probs.dtype)
        mean, std = _label_moments(probs)
        return Prediction(samples=obs.value, mean=mean, std=std, probs=probs, draws=obs)
    dtype = obs.loc.dtype
    epistemic, aleatoric = closed["epistemic_var"].to(dtype), closed["aleatoric_var"].to(dtype)
    return Prediction(
        samples=obs.value,
        mean=closed["mean"].to(dtype),
        std=(epistemic + aleatoric).sqrt(),
        epistemic_var=epistemic,
        aleatoric_var=aleatoric,
        draws=obs,
        gaussian=True,
    )


def mix_moments(per_chain: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The equal-weight mixture of each chain's closed-form predictive summaries: mean and
    variance by the law of total variance (the spread of the chains' means is epistemic),
    or the average class probabilities."""
    if "probs" in per_chain[0]:
        return {"probs": torch.stack([c["probs"] for c in per_chain]).mean(0)}
    means = torch.stack([c["mean"] for c in per_chain])
    epistemic = torch.stack([c["epistemic_var"] for c in per_chain]).mean(0)
    return {
        "mean": means.mean(0),
        "epistemic_var": epistemic + means.var(0, unbiased=False),
        "aleatoric_var": torch.stack([c["aleatoric_var"] for c in per_chain]).mean(0),
    }
