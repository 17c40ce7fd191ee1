"""One SVI step as one compiled graph: the ELBO, its gradient, and Pyro's ``ClippedAdam``
update of the parameters, in place.

The ELBO is an objective's (:class:`PotentialObjective`: Monte Carlo through the model's
flat potential, :class:`~pyro_bnn.infer.elbo.PotentialELBO`'s; or ``dvi``'s deterministic
ELBO, :class:`pyro_bnn.infer.dvi.DeterministicObjective`). Pyro's ``SVI.step`` with the
same loss computes the same objective, but then runs the optimiser in Python, one torch
optimiser per parameter, after a separate backward pass. Here the step is a pure function
of tensors,

    step(params, first moments, second moments, t, lr, noise, x, y) -> loss,

traced once per input shape with ``make_fx`` (through Pyro's model, ``torch.func.grad``
and the update, whose in-place writes land in the param store's own tensors) and then
run by ``torch.jit.trace`` (``backend="jit"``) or compiled by ``torch.compile``
(``backend="inductor"``; a new shape compiles in seconds). The guide stays Pyro's
(``AutoDiagonalNormal``, ``AutoLowRankMultivariateNormal``, ``AutoMultivariateNormal``,
``AutoDelta``) and the objective stays Pyro's: the draw and entropy are
:func:`pyro_bnn.infer.elbo.draw`'s, the ones ``PotentialELBO`` uses, and the update is
``ClippedAdam``'s (gradients clamped to ±``clip_norm``, Adam with bias correction). The
params are the guide's and those the model itself reads from Pyro's store (an
empirical-Bayes prior's scales), as ``SVI`` updates both.

Example:
    >>> import torch, pyro
    >>> from pyro.infer.autoguide import AutoDiagonalNormal
    >>> from pyro_bnn import zoo
    >>> from pyro_bnn.potential import Potential
    >>> model = zoo.build("bayesian-linear-regression", in_features=2)
    >>> x, y = torch.randn(8, 2), torch.randn(8)
    >>> guide = AutoDiagonalNormal(model); _ = guide(x, y)
    >>> objective = PotentialObjective(guide, Potential(model, x, y))
    >>> step = CompiledStep(guide, objective, backend="jit")
    >>> isinstance(step(x, y, lr=0.01), float)
    True
    >>> pyro.clear_param_store()  # the guide's parameters live in Pyro's global store
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pyro
import torch
from pyro.infer.autoguide import (
    AutoDelta,
    AutoDiagonalNormal,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
)
from torch.distributions import transform_to

from pyro_bnn.infer import elbo
from pyro_bnn.potential import Potential

__all__ = [
    "CompiledStep",
    "Objective",
    "PotentialObjective",
    "compile_graph",
    "graph_key",
    "supports",
]

GUIDES = (AutoDiagonalNormal, AutoLowRankMultivariateNormal, AutoMultivariateNormal, AutoDelta)


def supports(guide, potential: Potential) -> bool:
    """Whether the compiled step runs ``guide``: one of :data:`GUIDES` exactly (a subclass
    may draw differently), on the potential's layout."""
    return type(guide) in GUIDES and elbo.supports(guide, potential)


def compile_graph(
    step: Callable,
    inputs: tuple[torch.Tensor, ...],
    *,
    unvalidated: Callable[[torch.Tensor, torch.Tensor], contextlib.AbstractContextManager],
    backend: str,
) -> Callable:
    """``step(*inputs)``, a function of tensors through a model that may write into its
    inputs, as one graph: traced by ``make_fx`` (on copies: tracing runs it once) at the
    batch ``inputs[-2:]``, then run by ``torch.jit.trace`` (``backend="jit"``) or compiled
    by ``torch.compile`` (``"inductor"``, compiled now, on copies), all inside
    ``unvalidated(x, y)`` (a context in which the model's distributions do not validate,
    e.g. :meth:`Potential.unvalidated`). Any failure to trace raises."""
    from torch.fx.experimental.proxy_tensor import make_fx

    copies = tuple(t.clone() for t in inputs)
    with unvalidated(*inputs[-2:]):  # the first runs of the graph too
        graph = make_fx(step)(*copies)
        if backend == "inductor":
            compiled = torch.compile(graph, dynamic=False)
            compiled(*(t.clone() for t in inputs))
            return compiled
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.trace's deprecation
            return torch.jit.trace(graph, copies, check_trace=False)


def graph_key(fixed: tuple, inputs: tuple[torch.Tensor, ...]) -> tuple:
    """The cache key of a step's graph: what the graph bakes in (``fixed``) and the shapes
    and dtypes of the batch ``inputs[-2:]``, so minibatches of one shape share a graph."""
    x, y = inputs[-2:]
    return (fixed, tuple(x.shape), x.dtype, tuple(y.shape), y.dtype)


def _guide_parameters(guide) -> dict[str, str]:
    """{param store name: the guide's attribute} of ``guide``'s parameters."""
    prefix = f"{guide._pyro_name}."
    return {n: n[len(prefix) :] for n in pyro.get_param_store().keys() if n.startswith(prefix)}


class Objective(Protocol):
    """What a compiled step minimises: ``loss(values, noise, x, y)``, the −ELBO of the
    guide whose constrained parameters are ``values`` (by attribute), from ``noise`` (one
    row of ``noise_size`` standard normals per particle), with the model's own
    ``model_parameters`` (Pyro store names) read from the store; ``key``, what the graph
    bakes in; ``unvalidated(x, y)``, the context it is traced in."""

    key: tuple
    noise_size: int
    num_particles: int
    model_parameters: tuple[str, ...]

    def loss(self, values: dict[str, torch.Tensor], noise, x, y) -> torch.Tensor: ...

    def unvalidated(self, x, y) -> contextlib.AbstractContextManager: ...


class PotentialObjective:
    """``PotentialELBO``'s objective: the guide's reparameterised draws through the
    model's flat ``potential`` (which holds no parameters of its own), minus the guide's
    entropy, averaged over ``num_particles``."""

    model_parameters: tuple[str, ...] = ()

    def __init__(self, guide, potential: Potential, *, num_particles: int = 1) -> None:
        if not supports(guide, potential):
            raise ValueError(f"the compiled SVI step does not run {type(guide).__name__}")
        self.guide, self.potential, self.num_particles = guide, potential, num_particles
        self.noise_size = elbo.noise_size(guide, potential.layout)
        self.key = ("potential", id(potential))
        self.unvalidated = potential.unvalidated

    def loss(self, values, noise, x, y) -> torch.Tensor:
        loss = 0.0
        for particle in range(self.num_particles):
            theta, entropy = elbo.draw(self.guide, values, noise[particle], self.potential.layout)
            loss = loss + self.potential._energy(theta, x, y) - entropy
        return loss / self.num_particles


@contextlib.contextmanager
def _store_holding(names: list[str], tensors) -> Iterator[None]:
    """Pyro's store with ``tensors`` as the unconstrained values of ``names``: what the
    model reads through ``pyro.param`` while the step is traced."""
    params = pyro.get_param_store()._params
    saved = [params[n] for n in names]
    try:
        params.update(zip(names, tensors, strict=True))
        yield
    finally:
        params.update(zip(names, saved, strict=True))


class CompiledStep:
    """``step(x, y, lr) -> loss``: one SVI step of ``guide`` on ``objective``, as one
    compiled graph per input shape (kept in ``cache``, shared by the chains of a fit).
    ``ClippedAdam``'s defaults: ``clip_norm`` 10, ``betas`` (0.9, 0.999), ``eps`` 1e-8."""

    def __init__(
        self,
        guide,
        objective: Objective,
        *,
        backend: str,
        clip_norm: float = 10.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        cache: dict[Any, Any] | None = None,
    ) -> None:
        if type(guide) not in GUIDES:
            raise ValueError(f"the compiled SVI step does not run {type(guide).__name__}")
        if backend not in ("jit", "inductor"):
            raise ValueError(f"backend must be 'jit' or 'inductor', got {backend!r}")
        store = pyro.get_param_store()
        self.guide, self.objective, self.backend = guide, objective, backend
        self.clip_norm, self.betas, self.eps = clip_norm, betas, eps
        names = _guide_parameters(guide)
        self.attributes = list(names.values())
        self.model_parameters = list(objective.model_parameters)
        everything = [*names, *self.model_parameters]
        # the store's unconstrained tensors, written in place by the compiled update
        self.params = [store._params[n].detach() for n in everything]
        self.transforms = [transform_to(store._constraints[n]) for n in names]  # as the store
        self.moments = [torch.zeros_like(p) for p in self.params for _ in range(2)]
        # the step count and the rate stay float64 on the CPU (0-dim CPU tensors enter any
        # device's ops; MPS has no float64), as ClippedAdam's Python floats
        self.t = torch.zeros((), dtype=torch.float64, device="cpu")
        self.cache = {} if cache is None else cache
        # what the traced graph bakes in besides the batch's shape: fixed for this step
        self._graph_key = (
            type(guide),
            backend,
            objective.num_particles,
            (clip_norm, betas, eps),
            objective.key,
            tuple(self.model_parameters),
            tuple((tuple(p.shape), p.dtype) for p in self.params),
        )

    def _loss(self, params, noise, x, y) -> torch.Tensor:
        guide_params, model_params = params[: len(self.attributes)], params[len(self.attributes) :]
        values = {a: t(p) for a, t, p in zip(self.attributes, self.transforms, guide_params,
                                                strict=True)}  # fmt: skip
        with _store_holding(self.model_parameters, model_params):
            return self.objective.loss(values, noise, x, y)

    def _step(self, *tensors):
        n = len(self.params)
        params, moments = tensors[:n], tensors[n : 3 * n]
        t, lr, noise, x, y = tensors[3 * n :]
        grads, loss = torch.func.grad_and_value(self._loss)(params, noise, x, y)
        beta1, beta2 = self.betas
        t.add_(1)
        step_size = lr * torch.sqrt(1 - beta2**t) / (1 - beta1**t)
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            m, v = moments[2 * i], moments[2 * i + 1]
            g = g.clamp(-self.clip_norm, self.clip_norm)
            m.mul_(beta1).add_(g, alpha=1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            p.sub_(step_size.to(p.dtype) * (m / (v.sqrt() + self.eps)))  # ClippedAdam's order
        return loss

    def _compiled(self, inputs: tuple[torch.Tensor, ...]):
        key = graph_key(self._graph_key, inputs)
        if key not in self.cache:
            self.cache[key] = compile_graph(  # kept only once it has run
                self._step, inputs, unvalidated=self.objective.unvalidated, backend=self.backend
            )
        return self.cache[key]

    def _noise(self, draw) -> torch.Tensor:
        """One row of standard normals per particle, drawn as ``PotentialELBO`` draws them
        (one call per particle), so both take the same numbers from the generator."""
        like = self.params[0]
        return torch.stack([
            draw(self.objective.noise_size, dtype=like.dtype, device=like.device)
            for _ in range(self.objective.num_particles)
        ])  # fmt: skip

    def _inputs(self, x, y, lr: float, noise: torch.Tensor) -> tuple[torch.Tensor, ...]:
        lr = torch.tensor(lr, dtype=torch.float64, device="cpu")
        return (*self.params, *self.moments, self.t, lr, noise, x, y)

    def prepare(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Build (and compile) the step for batches shaped like ``(x, y)``, before the
        steps; the parameters do not move."""
        self._compiled(self._inputs(x, y, 0.0, self._noise(torch.zeros)))

    def __call__(self, x: torch.Tensor, y: torch.Tensor, *, lr: float) -> float:
        inputs = self._inputs(x, y, lr, self._noise(torch.randn))
        return float(self._compiled(inputs)(*inputs))
