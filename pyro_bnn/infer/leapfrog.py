"""A leaner leapfrog for Pyro's NUTS and HMC on one flat site.

Pyro's kernels integrate dicts of sites: each leapfrog step copies dicts, switches
``requires_grad`` on and off around an ``autograd.grad`` call, concatenates and splits the
momentum for the mass matrix, builds named tuples of dicts, and draws each NUTS subtree's
coin through ``pyro.sample``. On the one flat site of :mod:`pyro_bnn.potential` with a
diagonal mass matrix, the mixins here take the same steps on plain tensors: the same
floating-point operations in the same order, and the same random numbers in the same order
(the coin by ``torch.bernoulli``, which is what ``pyro.sample`` of the Bernoulli calls), so
a chain's draws are bit for bit those of Pyro's kernel. The gradient comes with the
potential's value (read off the fused potential, not recomputed by autograd).

The trees, step-size and mass-matrix adaptation, and each draw's bookkeeping stay Pyro's:
:class:`FlatNUTSMixin` replaces only ``NUTS._build_tree`` (where every leapfrog step is),
:class:`FlatHMCMixin` only the integration inside ``HMC.sample``. A kernel on a dense mass
matrix, several sites or NUTS's slice sampling runs Pyro's own code unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.util import scalar_like
from pyro.infer.mcmc.nuts import _TreeInfo
from pyro.ops.integrator import _EXCEPTION_HANDLERS, potential_grad
from pyro.util import optional

from pyro_bnn.potential import _FusedEnergy

__all__ = ["FlatHMCMixin", "FlatNUTSMixin", "ValueAndGrad", "flat_value_and_grad"]

ValueAndGrad = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def flat_value_and_grad(potential: Callable[[torch.Tensor], torch.Tensor]) -> ValueAndGrad:
    """θ -> (U(θ), ∇U(θ)) of a potential on one flat tensor, both detached: the gradient the
    fused potential (``backend="inductor"``) computed with its value, read off its autograd
    node; otherwise (a JIT-traced potential) by autograd. Either way the numbers Pyro's
    ``potential_grad`` gets."""
    fused = _FusedEnergy._backward_cls

    def value_and_grad(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        leaf = theta.detach().requires_grad_()
        value = potential(leaf)
        node = value.grad_fn
        if type(node) is fused:
            return value.detach(), node.saved_tensors[0]
        (grad,) = torch.autograd.grad(value, leaf)
        return value.detach(), grad

    return value_and_grad


class _Tree(NamedTuple):
    """Pyro's ``_TreeInfo`` on tensors (``ru``: momentum scaled by M^{-1/2})."""

    z_left: torch.Tensor
    r_left: torch.Tensor
    ru_left: torch.Tensor
    g_left: torch.Tensor
    z_right: torch.Tensor
    r_right: torch.Tensor
    ru_right: torch.Tensor
    g_right: torch.Tensor
    z_proposal: torch.Tensor
    pe_proposal: torch.Tensor
    g_proposal: torch.Tensor
    r_sum: torch.Tensor
    weight: torch.Tensor
    turning: bool
    diverging: bool
    sum_accept_probs: torch.Tensor
    num_proposals: int


class _Trajectory(NamedTuple):
    """What every leaf of one doubling shares."""

    direction: int
    step_size: float  # signed: negative going left
    inverse_mass: torch.Tensor  # M^{-1}, the diagonal
    sqrt_inverse_mass: torch.Tensor  # M^{-1/2}: unscales the momentum
    log_slice: torch.Tensor
    energy_current: torch.Tensor


def _logaddexp(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pyro's NUTS ``_logaddexp``, comparing as Python floats (exact for float32)."""
    low, high = (x, y) if float(x) < float(y) else (y, x)
    return (low - high).exp().log1p() + high


class _FlatSite:
    """Kernel mixin: the leapfrog step on one flat site with a diagonal mass matrix.

    Each operation is Pyro's (``velocity_verlet``, ``BlockMassMatrix.kinetic_grad`` and
    ``unscale``, ``HMC._kinetic_energy``) on the site's tensor, or one that rounds the same:
    c·(−g) as g·(−c), −(a − b) as b − a, 0.0 + x as x. The kernel counts gradients in
    ``num_gradients`` (``pyro_bnn.infer.mcmc``)."""

    num_gradients: int

    def __init__(self, *args: Any, value_and_grad: ValueAndGrad, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._value_and_grad = value_and_grad
        self._site: str | None = None  # the flat site's name, once set up

    def setup(self, *args: Any, **kwargs: Any) -> None:
        super().setup(*args, **kwargs)
        names = list(self.initial_params or {})
        blocks = self.inverse_mass_matrix
        flat = (
            len(names) == 1
            and self.initial_params[names[0]].dim() == 1
            and list(blocks) == [tuple(names)]
            and blocks[tuple(names)].dim() == 1
        )
        self._site = names[0] if flat else None

    def _diagonal(self) -> tuple[torch.Tensor, torch.Tensor]:
        """M^{-1} and M^{-1/2} (Pyro's ``mass_matrix_sqrt_inverse``) as vectors."""
        inverse_mass = self.inverse_mass_matrix[(self._site,)]
        return inverse_mass, inverse_mass.sqrt()

    def _potential_and_grad(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pyro's ``potential_grad`` on one tensor, with its registered error handlers."""
        self.num_gradients += 1
        try:
            return self._value_and_grad(z)
        except Exception as error:
            if any(handler(error) for handler in _EXCEPTION_HANDLERS.values()):
                return z.new_tensor(float("nan")), torch.zeros_like(z)
            raise

    def _leapfrog(
        self,
        z: torch.Tensor,
        r: torch.Tensor,
        grad: torch.Tensor,
        step_size: float,
        inverse_mass: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One velocity-Verlet step: (z, r, ∇U, U) at its end."""
        half = -0.5 * step_size
        r = r + grad * half
        z = z + (inverse_mass * r) * step_size
        potential_energy, grad = self._potential_and_grad(z)
        r = r + grad * half
        return z, r, grad, potential_energy

    @staticmethod
    def _kinetic(r_unscaled: torch.Tensor) -> torch.Tensor:
        return r_unscaled.dot(r_unscaled) * 0.5


class FlatNUTSMixin(_FlatSite):
    """For a subclass of Pyro's ``NUTS``: its trees on the flat site (multinomial sampling,
    diagonal mass matrix); Pyro's own ``_build_tree`` otherwise."""

    def _build_tree(
        self,
        z: dict[str, torch.Tensor],
        r: dict[str, torch.Tensor],
        z_grads: dict[str, torch.Tensor],
        log_slice: torch.Tensor,
        direction: int,
        tree_depth: int,
        energy_current: torch.Tensor,
    ) -> _TreeInfo:
        if self._site is None or not self.use_multinomial_sampling:
            return super()._build_tree(
                z, r, z_grads, log_slice, direction, tree_depth, energy_current
            )
        name = self._site
        inverse_mass, sqrt_inverse_mass = self._diagonal()
        step_size = self.step_size if direction == 1 else -self.step_size
        tree = self._flat_tree(
            z[name], r[name], z_grads[name], tree_depth,
            _Trajectory(direction, step_size, inverse_mass, sqrt_inverse_mass, log_slice,
                        energy_current),
        )  # fmt: skip
        block = (name,)
        return _TreeInfo(
            {name: tree.z_left}, {name: tree.r_left}, {block: tree.ru_left},
            {name: tree.g_left}, {name: tree.z_right}, {name: tree.r_right},
            {block: tree.ru_right}, {name: tree.g_right}, {name: tree.z_proposal},
            tree.pe_proposal, {name: tree.g_proposal}, {block: tree.r_sum}, tree.weight,
            tree.turning, tree.diverging, tree.sum_accept_probs, tree.num_proposals,
        )  # fmt: skip

    def _flat_leaf(
        self, z: torch.Tensor, r: torch.Tensor, grad: torch.Tensor, fixed: _Trajectory
    ) -> _Tree:
        """Pyro's ``_build_basetree``: one leapfrog step from (z, r)."""
        _, step_size, inverse_mass, sqrt_inverse_mass, log_slice, energy_current = fixed
        z, r, grad, potential_energy = self._leapfrog(z, r, grad, step_size, inverse_mass)
        r_unscaled = sqrt_inverse_mass * r
        energy = potential_energy + self._kinetic(r_unscaled)
        sliced_energy = energy + log_slice
        sliced = float(sliced_energy)  # one read of the device per leaf
        if sliced != sliced and math.isnan(float(energy)):  # Pyro: a NaN energy is +inf
            energy = scalar_like(energy, float("inf"))
            sliced_energy = energy + log_slice
            sliced = float(sliced_energy)
        diverging = sliced > self._max_sliced_energy
        accept_prob = (energy_current - energy).exp().clamp(max=1.0)
        return _Tree(
            z, r, r_unscaled, grad, z, r, r_unscaled, grad, z, potential_energy, grad,
            r_unscaled, -sliced_energy, False, diverging, accept_prob, 1,
        )  # fmt: skip

    def _flat_tree(
        self, z: torch.Tensor, r: torch.Tensor, grad: torch.Tensor, depth: int, fixed: _Trajectory
    ) -> _Tree:
        """Pyro's ``_build_tree`` on tensors."""
        if depth == 0:
            return self._flat_leaf(z, r, grad, fixed)
        half = self._flat_tree(z, r, grad, depth - 1, fixed)
        if half.turning or half.diverging:
            return half
        direction = fixed.direction
        if direction == 1:
            other = self._flat_tree(half.z_right, half.r_right, half.g_right, depth - 1, fixed)
        else:
            other = self._flat_tree(half.z_left, half.r_left, half.g_left, depth - 1, fixed)
        weight = _logaddexp(half.weight, other.weight)
        sum_accept_probs = half.sum_accept_probs + other.sum_accept_probs
        r_sum = half.r_sum + other.r_sum
        other_prob = (other.weight - weight).exp()
        if 0.0 <= float(other_prob) <= 1.0:
            # what pyro.sample of Bernoulli(other_prob) draws, and as many random numbers
            take_other = bool(torch.bernoulli(other_prob))
        else:  # a NaN: let Pyro's distribution raise (or not) as it would
            take_other = bool(
                pyro.sample("is_other_half_tree", dist.Bernoulli(probs=other_prob)) == 1
            )
        proposal = other if take_other else half
        left, right = (half, other) if direction == 1 else (other, half)
        turning = other.turning or self._flat_turning(left.ru_left, right.ru_right, r_sum)
        return _Tree(
            left.z_left, left.r_left, left.ru_left, left.g_left,
            right.z_right, right.r_right, right.ru_right, right.g_right,
            proposal.z_proposal, proposal.pe_proposal, proposal.g_proposal, r_sum, weight,
            turning, other.diverging, sum_accept_probs,
            half.num_proposals + other.num_proposals,
        )  # fmt: skip

    @staticmethod
    def _flat_turning(
        r_left_unscaled: torch.Tensor, r_right_unscaled: torch.Tensor, r_sum: torch.Tensor
    ) -> bool:
        """Pyro's ``_is_turning`` (Betancourt 2017, A.4.2) on one block."""
        rho = r_sum - (r_left_unscaled + r_right_unscaled) / 2
        return float(r_left_unscaled.dot(rho)) <= 0 or float(r_right_unscaled.dot(rho)) <= 0


class FlatHMCMixin(_FlatSite):
    """For a subclass of Pyro's ``HMC`` whose ``_transition(params)`` is ``HMC.sample``: the
    same transition with its trajectory integrated on the flat site."""

    def _transition(self, params: dict) -> dict:
        if self._site is None:
            return super()._transition(params)
        # Pyro's HMC.sample, every statement in its order, the integrator aside
        z, potential_energy, z_grads = self._fetch_from_cache()
        if z is None:
            z = params
            z_grads, potential_energy = potential_grad(self.potential_fn, z)
            self._cache(z, potential_energy, z_grads)
        r, r_unscaled = self._sample_r(name=f"r_t={self._t}")
        energy_current = self._kinetic_energy(r_unscaled) + potential_energy
        name = self._site
        inverse_mass, sqrt_inverse_mass = self._diagonal()
        with optional(pyro.validation_enabled(False), self._t < self._warmup_steps):
            step_size, num_steps = self.step_size, self.num_steps
            z_new, r_new, grad = z[name], r[name], z_grads[name]
            for _ in range(num_steps):
                z_new, r_new, grad, potential_energy_new = self._leapfrog(
                    z_new, r_new, grad, step_size, inverse_mass
                )
            energy_proposal = self._kinetic(sqrt_inverse_mass * r_new) + potential_energy_new
        delta_energy = energy_proposal - energy_current
        if math.isnan(float(delta_energy)):
            delta_energy = scalar_like(delta_energy, float("inf"))
        if delta_energy > self._max_sliced_energy and self._t >= self._warmup_steps:
            self._divergences.append(self._t - self._warmup_steps)
        accept_prob = (-delta_energy).exp().clamp(max=1.0)
        rand = pyro.sample(
            f"rand_t={self._t}",
            dist.Uniform(scalar_like(accept_prob, 0.0), scalar_like(accept_prob, 1.0)),
        )
        accepted = False
        if rand < accept_prob:
            accepted = True
            z, z_grads = {name: z_new}, {name: grad}
            self._cache(z, potential_energy_new, z_grads)
        self._t += 1
        if self._t > self._warmup_steps:
            n = self._t - self._warmup_steps
            if accepted:
                self._accept_cnt += 1
        else:
            n = self._t
            self._adapter.step(self._t, z, accept_prob, z_grads)
        self._mean_accept_prob += (accept_prob.item() - self._mean_accept_prob) / n
        return z.copy()
