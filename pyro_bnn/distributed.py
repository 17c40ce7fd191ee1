"""Scale-out on ``torch.distributed``: data-parallel SVI, and chains spread over ranks.

Start one process per rank with ``torchrun``, initialise the process group (gloo on CPUs,
tested; NCCL on GPUs, written for but untested here), and call :func:`pyro_bnn.fit` on
every rank with ``distributed=``:

- ``"data"`` (SVI and SG-MCMC methods): each rank holds an equal shard of the rows. Every step, each
  rank takes ``batch_size / world_size`` rows of its shard (the global minibatch is the
  union), evaluates the ELBO with the data term scaled to the whole dataset, and the
  gradients are averaged over ranks (DDP semantics) before the same optimiser update on
  every rank. All ranks draw the guide's noise from the same seed, so the average is
  exactly the gradient of the global minibatch's ELBO (or potential, for SG-MCMC, whose
  noise is shared the same way): the fit is the one-process fit on the same global
  batches (:func:`simulated`), up to floating-point reduction order.
- ``"chains"`` (every method): chain i runs on rank i mod world_size from the seed it
  would have in one process; the chains are gathered on rank 0.

``fit`` returns the :class:`~pyro_bnn.posterior.Posterior` on rank 0 (with every chain,
and the training rows of every shard) and None on the other ranks.

Example (two processes on one machine; on several machines add ``--nnodes``,
``--node_rank`` and ``--rdzv-endpoint=HOST:PORT``)::

    torchrun --nproc_per_node 2 my_script.py

    # my_script.py
    import torch.distributed as dist
    from pyro_bnn import fit, zoo
    dist.init_process_group("gloo")
    rank, size = dist.get_rank(), dist.get_world_size()
    x_shard, y_shard = x[rank::size], y[rank::size]  # equal shards
    post = fit(zoo.build("mlp-regression", in_features=x.shape[1]), x_shard, y_shard,
               method="meanfield", batch_size=256, distributed="data", seed=0)
    if rank == 0:
        post.save("posterior.safetensors")
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pyro
import torch
import torch.distributed as dist

__all__ = [
    "MODES",
    "DataParallel",
    "active",
    "check_shards",
    "data_parallel",
    "gather_rows",
    "gather_to_root",
    "global_rows",
    "minibatches",
    "shared_seed",
    "simulated",
    "step_rows",
    "together",
    "world",
]

MODES = ("data", "chains")


@dataclass(frozen=True)
class DataParallel:
    """A data-parallel fit: ``world_size`` equal shards; ``rank`` is the shard this
    process holds, or None when it holds all of them, concatenated in rank order
    (:func:`simulated`)."""

    world_size: int
    rank: int | None = None

    def global_rows(self, local_rows: int) -> int:
        """Rows of the whole dataset."""
        return local_rows if self.rank is None else local_rows * self.world_size

    def shard_rows(self, local_rows: int) -> int:
        """Rows of one shard."""
        return local_rows // self.world_size if self.rank is None else local_rows

    def step_rows(self, batch_size: int | None) -> int | None:
        """Rows this process evaluates per step (None: its full batch): its shard's part of
        a global minibatch of ``batch_size``, or the whole global minibatch in a
        simulation. An error unless the shards split it evenly."""
        if batch_size is None:
            return None
        if batch_size % self.world_size:
            raise ValueError(f"batch_size {batch_size} must be divisible by the "
                             f"{self.world_size} data-parallel ranks")  # fmt: skip
        return batch_size if self.rank is None else batch_size // self.world_size

    def average(self, params, loss: float) -> float:
        """Average the gradients of ``params`` (in the parameter store's name order, the
        same on every rank) and the loss over ranks, in one all-reduce; the mean loss.
        In a simulation (one process) nothing moves."""
        if self.rank is None:
            return loss
        store = pyro.get_param_store()
        ordered = sorted(params, key=store.param_name)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in ordered]
        flat = _mean_over_ranks(
            torch.cat([g.reshape(-1) for g in grads] + [grads[0].new_tensor([loss])])
        )
        start = 0
        for p, g in zip(ordered, grads, strict=True):
            n = g.numel()
            if p.grad is None:
                p.grad = flat[start : start + n].view_as(p).clone()
            else:
                p.grad.copy_(flat[start : start + n].view_as(p))
            start += n
        return float(flat[-1])

    def average_flat(self, grad: torch.Tensor, energy: torch.Tensor) -> tuple[torch.Tensor, float]:
        """A flat gradient and its potential averaged over ranks in one all-reduce (an
        SG-MCMC step); unchanged in a simulation."""
        if self.rank is None:
            return grad, float(energy)
        flat = _mean_over_ranks(
            torch.cat([grad.reshape(-1), energy.detach().reshape(1).to(grad.dtype)])
        )
        return flat[:-1].view_as(grad), float(flat[-1])


def _mean_over_ranks(flat: torch.Tensor) -> torch.Tensor:
    """``flat`` averaged over the ranks, in place, in one all-reduce."""
    dist.all_reduce(flat)
    return flat.div_(dist.get_world_size())


def global_rows(local_rows: int) -> int:
    """Rows of the whole dataset that ``local_rows`` (this process's) belong to."""
    plan = active()
    return local_rows if plan is None else plan.global_rows(local_rows)


def step_rows(batch_size: int | None) -> int | None:
    """Rows this process evaluates per step of minibatches of ``batch_size``."""
    plan = active()
    return batch_size if plan is None else plan.step_rows(batch_size)


def minibatches(sampler: Callable[..., Iterator], rows: int, batch_size: int | None) -> Iterator:
    """``sampler(rows, batch_size)``'s minibatch indices, or inside a data-parallel fit
    the same sampler over the shards (``shards=``, ``shard=``): this rank's part of each
    global minibatch (in a simulation, all of it)."""
    plan = active()
    if plan is None:
        return sampler(rows, batch_size)
    plan.step_rows(batch_size)  # checks that the ranks split it evenly
    return sampler(plan.shard_rows(rows), batch_size, shards=plan.world_size, shard=plan.rank)


def shard_rows_index(rows: torch.Tensor, *, shard_rows: int, shards: int,
                     shard: int | None) -> torch.Tensor:  # fmt: skip
    """Positions ``rows`` within a shard as this process's row index: into its own shard,
    or (``shard=None``, a simulation) into every shard, concatenated in rank order."""
    if shard is not None or shards == 1:
        return rows
    return torch.cat([s * shard_rows + rows for s in range(shards)])


_ACTIVE: list[DataParallel] = []


def active() -> DataParallel | None:
    """The data-parallel fit this process is part of, if any."""
    return _ACTIVE[-1] if _ACTIVE else None


@contextlib.contextmanager
def data_parallel(plan: DataParallel) -> Iterator[DataParallel]:
    """Run the SVI fits inside as part of ``plan``."""
    _ACTIVE.append(plan)
    try:
        yield plan
    finally:
        _ACTIVE.pop()


def simulated(world_size: int) -> contextlib.AbstractContextManager[DataParallel]:
    """In one process, a fit on the global minibatches that a ``world_size``-rank
    data-parallel fit would draw; the data are the ranks' equal shards concatenated in rank
    order. The reference the data-parallel fit is tested against.

    Example:
        >>> import torch
        >>> from pyro_bnn import fit, zoo
        >>> from pyro_bnn.distributed import simulated
        >>> x = torch.randn(40, 2); y = x.sum(1)
        >>> with simulated(2):
        ...     post = fit(zoo.build("mlp-regression", in_features=2, hidden=(4,)), x, y,
        ...                method="map", batch_size=8, num_steps=5, progress_bar=False)
        >>> len(post.losses[0])
        5
    """
    if world_size < 1:
        raise ValueError(f"world_size must be a positive integer, got {world_size}")
    return data_parallel(DataParallel(world_size, None))


def world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group."""
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "distributed= needs an initialised torch.distributed process group: start the "
            "processes with torchrun and call torch.distributed.init_process_group('gloo') "
            "(or 'nccl' on GPUs) first"
        )
    return dist.get_rank(), dist.get_world_size()


def _collective_device() -> torch.device:
    """Where collective tensors live: this rank's GPU under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@contextlib.contextmanager
def together(enabled: bool = True) -> Iterator[None]:
    """Run a step that may fail on some ranks only (input checks): every rank learns
    whether any failed, so none is left waiting in a later collective. The rank that failed
    raises its own error; the others a RuntimeError that says so."""
    if not enabled:
        yield
        return
    try:
        yield
    except Exception:
        _any_failed(True)
        raise
    if _any_failed(False):
        raise RuntimeError(
            f"rank {dist.get_rank()}: another rank failed (its own error says why); "
            "this rank stops too"
        )


def _any_failed(failed: bool) -> bool:
    flag = torch.tensor([int(failed)], dtype=torch.int64, device=_collective_device())
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def shared_seed(seed: int | None) -> int:
    """``seed``, or rank 0's random seed, the same on every rank."""
    value = torch.tensor([-1 if seed is None else seed], dtype=torch.int64,
                         device=_collective_device())  # fmt: skip
    if seed is None and dist.get_rank() == 0:
        value[0] = int(torch.randint(0, 2**31 - 1, ()))
    dist.broadcast(value, src=0)
    return int(value[0])


def check_shards(x: torch.Tensor, y: torch.Tensor) -> None:
    """Every rank holds as many rows, of the same shape and target type, or a clear error
    on every rank."""
    device = _collective_device()
    mine = torch.tensor([len(x), x[0].numel() if len(x) else 0, int(torch.is_floating_point(y))],
                        dtype=torch.int64, device=device)  # fmt: skip
    found = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(found, mine)
    rows, features, floats = zip(*(t.tolist() for t in found), strict=True)
    if len(set(rows)) > 1:
        raise ValueError(f"data-parallel fits need equal shards; the ranks hold {list(rows)} "
                         "rows: drop rows so that each holds the same number")  # fmt: skip
    if len(set(features)) > 1 or len(set(floats)) > 1:
        raise ValueError(f"the ranks' shards differ in their features per row {list(features)} "
                         f"or target type (float: {list(floats)})")  # fmt: skip


def gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """The ranks' equal shards of ``tensor``, concatenated in rank order (on every rank)."""
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def gather_to_root(value: Any) -> list[Any] | None:
    """Every rank's ``value`` (picklable) as a list on rank 0; None elsewhere."""
    rank, size = world()
    found = [None] * size if rank == 0 else None
    dist.gather_object(value, found, dst=0)
    return found
