"""The model's potential energy on one flat unconstrained vector, JIT-traced.

U(θ) = −log p(y, T(θ)) − log|det ∂T/∂θ|, where θ concatenates every latent site in
unconstrained space and T maps each block to its site's support (``biject_to``). This is
the same potential Pyro's HMC builds, but as a single tensor function: NUTS moves one
site, and SVI evaluates its ELBO through it (``pyro_bnn.infer.elbo``). The model is
traced once per input shape with ``torch.jit.trace``, which removes Pyro's per-call
Python work (effect handlers, trace bookkeeping) from every gradient.

It applies to models whose latent sites all sit outside plates and whose structure does
not depend on the data values, which is every BNN here; :func:`flat_layout` says when not.

Example:
    >>> import torch
    >>> from pyro_bnn import zoo
    >>> model = zoo.build("bayesian-linear-regression", in_features=2)
    >>> x, y = torch.randn(5, 2), torch.randn(5)
    >>> potential = Potential(model, x, y)
    >>> potential.layout.size
    3
    >>> potential(torch.zeros(3)).shape
    torch.Size([])
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch.distributions import biject_to

from pyro_bnn.init import trace_at_support_zero

__all__ = [
    "BACKENDS",
    "FlatLayout",
    "Potential",
    "flat_initial_values",
    "flat_layout",
    "flat_potential",
]


@dataclass(frozen=True)
class FlatLayout:
    """Where each latent site lives in the flat unconstrained vector."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]  # constrained shapes
    unconstrained_shapes: tuple[torch.Size, ...]
    transforms: tuple  # unconstrained -> constrained, one per site

    @property
    def size(self) -> int:
        return sum(int(torch.Size(s).numel()) for s in self.unconstrained_shapes)

    def split(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unconstrained blocks of ``theta`` (..., size), shaped like their sites."""
        blocks, start = {}, 0
        batch = theta.shape[:-1]
        for name, shape in zip(self.names, self.unconstrained_shapes, strict=True):
            n = int(torch.Size(shape).numel())
            blocks[name] = theta[..., start : start + n].reshape(batch + torch.Size(shape))
            start += n
        return blocks

    def constrain(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """Site values (constrained) for a flat vector or a batch of them."""
        return {
            name: transform(block)
            for (name, block), transform in zip(
                self.split(theta).items(), self.transforms, strict=True
            )
        }

    def flatten(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """The flat unconstrained vector of constrained site ``values``."""
        return torch.cat(
            [
                transform.inv(values[name]).reshape(-1)
                for name, transform in zip(self.names, self.transforms, strict=True)
            ]
        )


def flat_layout(model: Callable, x: torch.Tensor, y: torch.Tensor) -> FlatLayout | None:
    """The flat layout of ``model``'s latent sites, or None if a latent sits in a plate."""
    return _layout_of(trace_at_support_zero(model, x, y))


def flat_potential(
    model: Callable, x: torch.Tensor, y: torch.Tensor, *, backend: str
) -> Potential | None:
    """``model``'s flat potential, or None where it does not apply: a latent inside a plate,
    or deterministic parameters (a compiled potential would freeze them as constants)."""
    trace = trace_at_support_zero(model, x, y)
    if any(site["type"] == "param" for site in trace.nodes.values()):
        return None
    layout = _layout_of(trace)
    return None if layout is None else Potential(model, x, y, backend=backend, layout=layout)


def _layout_of(trace) -> FlatLayout | None:
    names, shapes, unconstrained, transforms = [], [], [], []
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or site_is_subsample(site):
            continue
        if site["cond_indep_stack"]:
            return None
        transform = biject_to(site["fn"].support)
        names.append(name)
        shapes.append(site["value"].shape)
        unconstrained.append(transform.inv(site["value"]).shape)
        transforms.append(transform)
    return FlatLayout(tuple(names), tuple(shapes), tuple(unconstrained), tuple(transforms))


BACKENDS = ("inductor", "jit", "eager")


@contextlib.contextmanager
def _unvalidated(trace_fns: list) -> Iterator[None]:
    """Switch off argument/sample validation, also on distributions built earlier (the
    priors held by ``PyroSample``): compiled code cannot branch on tensor values."""
    saved = []
    for fn in trace_fns:
        while fn is not None:
            saved.append((fn, fn.__dict__.get("_validate_args")))
            fn._validate_args = False
            fn = getattr(fn, "base_dist", None)
    try:
        with pyro.validation_enabled(False):
            yield
    finally:
        for fn, value in saved:
            if value is None:
                fn.__dict__.pop("_validate_args", None)
            else:
                fn._validate_args = value


class _FusedEnergy(torch.autograd.Function):
    """U(θ) whose backward is a gradient already computed with the value."""

    @staticmethod
    def forward(ctx, theta, x, y, value_and_grad: Callable) -> torch.Tensor:
        grad, value = value_and_grad(theta.detach(), x, y)
        ctx.save_for_backward(grad)
        return value

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad_output * grad, None, None, None


class Potential:
    """U(θ) of ``model`` at data ``(x, y)``: a differentiable scalar function of θ.

    ``backend``:
    - ``"jit"``: the model is traced once per input shape with ``torch.jit.trace``;
    - ``"inductor"``: U and ∇U are traced together into one aten graph (``make_fx`` of
      ``torch.func.grad_and_value``) and compiled with ``torch.compile``; the first call
      per input shape compiles (tens of seconds), later gradients cost a fused kernel call.
      If compilation fails the potential falls back to ``"jit"`` with a warning;
    - ``"eager"``: plain Pyro, for reference.

    Call it on other data with ``potential(theta, x, y)``.
    """

    def __init__(
        self,
        model: Callable,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        backend: str = "jit",
        layout: FlatLayout | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown potential backend {backend!r}; choose one of {BACKENDS}")
        layout = layout or flat_layout(model, x, y)
        if layout is None:
            raise ValueError("the flat potential needs every latent site outside plates")
        self.model, self.x, self.y, self.backend, self.layout = model, x, y, backend, layout
        self._compiled: dict[tuple, Callable] = {}

    def _energy(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        values, log_det = {}, theta.new_zeros(())
        for (name, block), transform in zip(
            self.layout.split(theta).items(), self.layout.transforms, strict=True
        ):
            value = transform(block)
            values[name] = value
            log_det = log_det + transform.log_abs_det_jacobian(block, value).sum()
        trace = poutine.trace(poutine.condition(self.model, data=values)).get_trace(x, y)
        return -(trace.log_prob_sum(site_filter=lambda _, s: not site_is_subsample(s)) + log_det)

    def _site_fns(self, x, y) -> list:
        with torch.random.fork_rng():  # a look at the model, not a draw from the stream
            trace = trace_at_support_zero(self.model, x, y)
        return [s["fn"] for s in trace.nodes.values() if s["type"] == "sample"]

    def unvalidated(self, x: torch.Tensor, y: torch.Tensor) -> contextlib.AbstractContextManager:
        """A context in which the model at ``(x, y)`` runs without validating its
        distributions, so that it can be traced into a graph (``make_fx``)."""
        return _unvalidated(self._site_fns(x, y))

    def _compile_inductor(self, theta, x, y) -> Callable:
        from torch.fx.experimental.proxy_tensor import make_fx

        value_and_grad = torch.func.grad_and_value(self._energy)  # d/dθ only
        with self.unvalidated(x, y):
            graph = make_fx(lambda t, a, b: value_and_grad(t, a, b))(theta.detach(), x, y)
        compiled = torch.compile(graph, dynamic=False)
        compiled(theta.detach(), x, y)  # compile now, not inside the sampler's first step
        return lambda t, a, b: _FusedEnergy.apply(t, a, b, compiled)

    def _build(self, theta, x, y) -> Callable:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.backend == "inductor":
                try:
                    return self._compile_inductor(theta, x, y)
                except Exception as error:
                    warnings.warn(
                        f"torch.compile of the potential failed ({type(error).__name__}: "
                        f"{str(error)[:200]}); using the JIT-traced potential",
                        RuntimeWarning,
                        stacklevel=3,
                    )
            return torch.jit.trace(self._energy, (theta.detach(), x, y), check_trace=False)

    def __call__(
        self, theta: torch.Tensor, x: torch.Tensor | None = None, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = self.x if x is None else x
        y = self.y if y is None else y
        if self.backend == "eager":
            return self._energy(theta, x, y)
        key = (tuple(theta.shape), tuple(x.shape), tuple(y.shape), y.dtype)
        if key not in self._compiled:
            self._compiled[key] = self._build(theta, x, y)
        return self._compiled[key](theta, x, y)


def flat_initial_values(
    model: Callable, x, y, layout: FlatLayout, *, init_strategy: Callable, num_chains: int
) -> torch.Tensor:
    """Each chain's start (from ``init_strategy``) as one flat unconstrained vector:
    (num_chains, layout.size). A model whose density is not finite at any start tried is
    refused with a ValueError about the data's scale."""
    from pyro.infer.mcmc.util import initialize_model

    try:
        initial, _, transforms, _ = initialize_model(
            model, model_args=(x, y), init_strategy=init_strategy, num_chains=num_chains
        )
    except ValueError as error:  # Pyro: "cannot find valid initial params"
        if "initial params" not in str(error):
            raise
        from pyro_bnn.diagnostics import not_finite_at_start

        raise ValueError(not_finite_at_start("sampler's", "potential", x, y)) from None
    chains = []
    for chain in range(num_chains):
        values = {
            name: transforms[name].inv(initial[name][chain] if num_chains > 1 else initial[name])
            for name in layout.names
        }
        chains.append(layout.flatten(values))
    return torch.stack(chains)
