"""Replay a model under posterior draws and read its observed site.

The model runs with every latent site fixed to a draw (``poutine.condition``). Draws go
through in chunks: all draws of a chunk in one pass, inside a plate left of the ``data``
plate (Pyro's ``Predictive(parallel=True)`` layout), when the model's layers accept batched
weights (the zoo's do); else one draw at a time. Rows of ``x`` go in
batches too, so memory stays bounded by ``draw_chunk × row_batch``.

Example:
    >>> import torch
    >>> from pyro_bnn.zoo.bayesian_linear_regression import BayesianLinearRegression
    >>> model = BayesianLinearRegression(in_features=1, noise_scale=0.1)
    >>> draws = {"linear.weight": torch.ones(3, 1, 1), "linear.bias": torch.zeros(3, 1)}
    >>> replay(model, draws, torch.tensor([[2.0]])).loc
    tensor([[2.],
            [2.],
            [2.]])
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import site_is_subsample

from pyro_bnn.likelihoods import OBS_SITE
from pyro_bnn.priors import base_distribution
from pyro_bnn.validation import check_count, obs_shape_error

__all__ = ["DRAWS_PLATE", "ObsDraws", "obs_draws_of", "replay"]

DRAWS_PLATE = "_draws"


@dataclass
class ObsDraws:
    """What the observed site gives for each draw (leading dim) and row.

    ``value``: a draw of ``obs`` (or ``y`` itself when given); ``loc``/``noise_var``: mean
    and variance of a location-scale likelihood; ``probs``: class probabilities
    (``(draws, rows, classes)``, Bernoulli included); ``log_lik``: pointwise
    log p(y | draw) when ``y`` was given; ``log_joint``: log p(y, draw) per draw.
    """

    value: torch.Tensor
    loc: torch.Tensor | None = None
    noise_var: torch.Tensor | None = None
    probs: torch.Tensor | None = None
    log_lik: torch.Tensor | None = None
    log_joint: torch.Tensor | None = None

    @classmethod
    def gather(cls, parts: list[tuple[torch.Tensor, ObsDraws]], num_draws: int) -> ObsDraws:
        """One ObsDraws of ``num_draws`` draws from ``(mask over the draws, part)`` pairs."""
        merged = {}
        for f in fields(cls):
            values = [(mask, getattr(part, f.name)) for mask, part in parts]
            if values[0][1] is None:
                merged[f.name] = None
                continue
            first = values[0][1]
            out = first.new_empty((num_draws, *first.shape[1:]))
            for mask, value in values:
                out[mask] = value
            merged[f.name] = out
        return cls(**merged)

    @classmethod
    def concat(cls, parts: list[ObsDraws], dim: int) -> ObsDraws:
        """Concatenate along draws (``dim=0``) or rows (``dim=1``)."""
        merged = {}
        for f in fields(cls):
            values = [getattr(p, f.name) for p in parts]
            merged[f.name] = None if values[0] is None else torch.cat(values, dim=dim)
        return cls(**merged)


def _per_draw(lp: torch.Tensor, vectorized: bool) -> torch.Tensor:
    """Sum a site's log-density over everything but the draws plate."""
    return lp.reshape(lp.shape[0], -1).sum(-1) if vectorized else lp.sum()


class ObsShapeError(ValueError):
    """The observed site does not hold one value per row (and per draw)."""


def _summarise(
    trace: Trace,
    *,
    with_y: bool,
    with_joint: bool,
    expected: tuple[int, ...],
    x_shape: tuple[int, ...],
) -> ObsDraws:
    """Read ``obs`` from ``trace``; its batch shape must be ``expected``: (rows,), or
    (draws, rows) when the draws are vectorised."""
    node = trace.nodes.get(OBS_SITE)
    if node is None:
        raise ValueError(f"the model has no '{OBS_SITE}' site")
    fn, value = node["fn"], node["value"]
    batch = torch.broadcast_shapes(fn.batch_shape, value.shape[: value.dim() - len(fn.event_shape)])
    if tuple(batch) != expected or len(fn.event_shape) != 0:
        raise ObsShapeError(obs_shape_error(tuple(batch + fn.event_shape), expected[-1], x_shape))
    vectorized = len(expected) == 2
    out = obs_draws_of(fn, value if with_y else None, batch=tuple(batch), value=value)
    if with_joint:
        out.log_joint = sum(
            _per_draw(site["fn"].log_prob(site["value"]), vectorized)
            for site in trace.nodes.values()
            if site["type"] == "sample" and not site_is_subsample(site)
        )
    return out


def obs_draws_of(
    fn: dist.Distribution,
    y: torch.Tensor | None,
    *,
    batch: tuple[int, ...],
    value: torch.Tensor | None = None,
) -> ObsDraws:
    """What an observed distribution ``fn`` of batch shape ``batch`` gives: a draw (or
    ``value``, or ``y``), its moments or class probabilities, and log p(y) given ``y``."""
    base = base_distribution(fn)
    if value is None:
        value = fn.sample() if y is None else y
    out = ObsDraws(value=value.expand(batch))
    if isinstance(base, dist.Categorical):
        out.probs = base.probs.expand(*batch, base.probs.shape[-1])
    elif isinstance(base, dist.Bernoulli):
        p = base.probs.expand(batch)
        out.probs = torch.stack([1 - p, p], dim=-1)
    else:
        out.loc = base.mean.expand(batch)
        out.noise_var = base.variance.expand(batch)
    if y is not None:
        out.log_lik = fn.log_prob(y).expand(batch)
    return out


def _trace(model: Callable, draw: dict[str, torch.Tensor], x, y) -> Trace:
    return poutine.trace(poutine.condition(model, data=draw)).get_trace(x, y)


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _vectorized(model, draws, x, y, with_joint: bool) -> ObsDraws | None:
    """All draws in one pass, in Pyro's plate layout; None if the model can't batch them."""
    num = next(iter(draws.values())).shape[0]
    # draws sit in a plate left of the data plate: values get a size-1 slot for it
    slotted = {name: value.unsqueeze(1) for name, value in draws.items()}
    try:
        with pyro.plate(DRAWS_PLATE, num, dim=-2):
            trace = _trace(model, slotted, x, y)
        # a wrong shape here may be the model's layers not batching draws: the sequential
        # path decides
        return _summarise(
            trace,
            with_y=y is not None,
            with_joint=with_joint,
            expected=(num, len(x)),
            x_shape=tuple(x.shape),
        )
    except (RuntimeError, ValueError) as error:
        if f"has no '{OBS_SITE}' site" in str(error):
            raise
        return None


def _sequential(model, draws, x, y, with_joint: bool) -> ObsDraws:
    num = next(iter(draws.values())).shape[0]
    singles = []
    for i in range(num):
        trace = _trace(model, {name: value[i] for name, value in draws.items()}, x, y)
        single = _summarise(
            trace,
            with_y=y is not None,
            with_joint=with_joint,
            expected=(len(x),),
            x_shape=tuple(x.shape),
        )
        singles.append(
            ObsDraws(
                **{
                    f.name: None
                    if getattr(single, f.name) is None
                    else getattr(single, f.name)[None]
                    for f in fields(ObsDraws)
                }
            )
        )
    return ObsDraws.concat(singles, dim=0)


def replay(
    model: Callable,
    draws: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    log_joint: bool = False,
    draw_chunk: int = 500,
    row_batch: int = 1000,
) -> ObsDraws:
    """Evaluate the observed site of ``model(x, y)`` for every draw (leading dim of ``draws``).

    ``log_joint`` (which needs ``y``) also returns log p(y, draw) per draw and uses all rows
    at once.
    """
    draw_chunk = check_count(draw_chunk, name="draw_chunk")
    row_batch = check_count(row_batch, name="row_batch")
    num = next(iter(draws.values())).shape[0]
    if log_joint:
        row_batch = max(len(x), 1)
    vectorize = True
    rows = []
    with torch.no_grad():
        for row in _chunks(len(x), row_batch):
            parts = []
            x_rows, y_rows = x[row], None if y is None else y[row]
            for part in _chunks(num, draw_chunk):
                chunk = {name: value[part] for name, value in draws.items()}
                result = _vectorized(model, chunk, x_rows, y_rows, log_joint) if vectorize else None
                if result is None:
                    vectorize = False  # the model's layers need one draw at a time
                    result = _sequential(model, chunk, x_rows, y_rows, log_joint)
                parts.append(result)
            rows.append(ObsDraws.concat(parts, dim=0))
    return rows[0] if len(rows) == 1 else ObsDraws.concat(rows, dim=1)
