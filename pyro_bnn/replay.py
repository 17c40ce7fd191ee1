"""Replay a model under posterior draws and read its observed site.

The model runs with every latent site fixed to a draw (``poutine.condition``). Draws go
through in chunks: all draws of a chunk in one pass when the model's layers accept a
leading batch of weights (the zoo's do), else one draw at a time. Rows of ``x`` go in
batches too, so memory stays bounded by ``draw_chunk × row_batch``.

Example:
    >>> import torch
    >>> from models.bayesian_linear_regression import BayesianLinearRegression
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

import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.poutine.trace_struct import Trace

from pyro_bnn.likelihoods import OBS_SITE

__all__ = ["ObsDraws", "replay"]


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


def _base(fn: dist.Distribution) -> dist.Distribution:
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return fn


def _summarise(trace: Trace, with_y: bool, with_joint: bool, leading: int) -> ObsDraws:
    node = trace.nodes.get(OBS_SITE)
    if node is None:
        raise ValueError(f"the model has no '{OBS_SITE}' site")
    fn, value = node["fn"], node["value"]
    base = _base(fn)
    batch = torch.broadcast_shapes(fn.batch_shape, value.shape[: value.dim() - len(fn.event_shape)])
    out = ObsDraws(value=value.expand(batch))
    if isinstance(base, dist.Categorical):
        out.probs = base.probs.expand(*batch, base.probs.shape[-1])
    elif isinstance(base, dist.Bernoulli):
        p = base.probs.expand(batch)
        out.probs = torch.stack([1 - p, p], dim=-1)
    else:
        out.loc = base.mean.expand(batch)
        out.noise_var = base.variance.expand(batch)
    if with_y:
        out.log_lik = fn.log_prob(value).expand(batch)
    if with_joint:
        total = torch.zeros(leading) if leading else torch.zeros(())
        for site in trace.nodes.values():
            if site["type"] != "sample":
                continue
            lp = site["fn"].log_prob(site["value"])
            lp = lp.sum(dim=tuple(range(-len(site["cond_indep_stack"]), 0))) if lp.dim() else lp
            total = total + lp
        out.log_joint = total
    return out


def _stack(parts: list[ObsDraws], dim: int) -> ObsDraws:
    """Concatenate along draws (``dim=0``) or rows (``dim=1``)."""
    merged = {}
    for f in fields(ObsDraws):
        values = [getattr(p, f.name) for p in parts]
        merged[f.name] = None if values[0] is None else torch.cat(values, dim=dim)
    return ObsDraws(**merged)


def _trace(model: Callable, draw: dict[str, torch.Tensor], x, y) -> Trace:
    return poutine.trace(poutine.condition(model, data=draw)).get_trace(x, y)


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _replay_chunk(model, draws, x, y, with_joint: bool, vectorize: bool) -> tuple[ObsDraws, bool]:
    num = next(iter(draws.values())).shape[0]
    if vectorize:
        try:
            result = _summarise(_trace(model, draws, x, y), y is not None, with_joint, num)
            if result.value.dim() >= 1 and result.value.shape[0] == num and (
                result.log_joint is None or result.log_joint.shape == (num,)
            ):
                return result, True
        except (RuntimeError, ValueError) as error:
            if f"'{OBS_SITE}' site" in str(error):
                raise
    singles = []
    for i in range(num):
        draw = {name: value[i] for name, value in draws.items()}
        single = _summarise(_trace(model, draw, x, y), y is not None, with_joint, 0)
        singles.append(ObsDraws(**{
            f.name: None if getattr(single, f.name) is None else getattr(single, f.name)[None]
            for f in fields(ObsDraws)
        }))
    return _stack(singles, dim=0), False


def replay(
    model: Callable,
    draws: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    log_joint: bool = False,
    draw_chunk: int = 100,
    row_batch: int = 2048,
) -> ObsDraws:
    """Evaluate the observed site of ``model(x, y)`` for every draw (leading dim of ``draws``).

    ``log_joint`` (which needs ``y``) also returns log p(y, draw) per draw and uses all rows
    at once.
    """
    num = next(iter(draws.values())).shape[0]
    if log_joint:
        row_batch = max(len(x), 1)
    vectorize = True
    rows = []
    with torch.no_grad():
        for row in _chunks(len(x), row_batch):
            parts = []
            for part in _chunks(num, draw_chunk):
                chunk = {name: value[part] for name, value in draws.items()}
                result, vectorize = _replay_chunk(
                    model, chunk, x[row], None if y is None else y[row], log_joint, vectorize
                )
                parts.append(result)
            rows.append(_stack(parts, dim=0))
    return rows[0] if len(rows) == 1 else _stack(rows, dim=1)
