"""Scale-out on torch.distributed (``pyro_bnn.distributed``), with 2 gloo processes on
localhost.

- Data-parallel SVI gives the loss trajectory of one process on the same global batches
  (:func:`pyro_bnn.distributed.simulated`) within 1e-5 relative: the two compute the same
  gradients, and differ only in the order of floating-point sums (the per-shard sums and
  the all-reduce), which moves a float32 loss of this size by about 1e-7 relative.
- Data-parallel SG-MCMC (SGLD) gives the one-process chain on the same global batches,
  up to the same rounding (compounded over its 40 steps: 1e-4 relative).
- Chains spread over the ranks give the draws of the same chains run in one process.
"""

import datetime

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pyro_bnn import fit, load, zoo
from pyro_bnn.distributed import simulated

WORLD = 2
ROWS = 64  # 32 per rank
SVI = dict(method="meanfield", batch_size=16, num_steps=60, num_draws=10, seed=3,
           progress_bar=False)  # fmt: skip
SGLD = dict(method="sgld", num_samples=20, burn_in=20, batch_size=16, step_size=1e-3,
            seed=5, progress_bar=False)  # fmt: skip
CHAINS = dict(method="sgld", num_chains=3, num_samples=20, burn_in=20, batch_size=16,
              seed=4, progress_bar=False)  # fmt: skip


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(ROWS, 2, generator=g)
    return x, torch.sin(x[:, 0]) + 0.1 * torch.randn(ROWS, generator=g)


def _model():
    return zoo.build("mlp-regression", in_features=2, hidden=(8,))


class FailsOnRankOne(torch.nn.Module):
    """The zoo MLP, which raises on rank 1 once its chain is running (after the checks)."""

    def __init__(self):
        super().__init__()
        self.net, self.calls = _model(), 0

    def forward(self, x, y=None):
        self.calls += 1
        if dist.get_rank() == 1 and self.calls > 3:
            raise ValueError("boom on rank 1")
        return self.net(x, y)


def _failing_rank(rank: int, store: str, out: str, mode: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                            world_size=WORLD)  # fmt: skip
    x, y = _data()
    try:
        if mode == "bad-shard":
            if rank == 1:
                y = y.clone()
                y[ROWS // WORLD + 3] = float("nan")  # a row of its own shard
            shard = slice(rank * ROWS // WORLD, (rank + 1) * ROWS // WORLD)
            fit(_model(), x[shard], y[shard], distributed="data", **SVI)
        else:
            fit(FailsOnRankOne(), x, y, distributed="chains", **(CHAINS | dict(num_chains=2)))
        outcome = "no error"
    except Exception as error:
        outcome = f"{type(error).__name__}: {error}"
    with open(f"{out}.{rank}", "w") as f:
        f.write(outcome)
    dist.barrier()  # tear down together: gloo aborts a rank left alone
    dist.destroy_process_group()


@pytest.mark.parametrize("mode", ["bad-shard", "failing-chain"])
def test_a_rank_that_fails_stops_every_rank(mode, tmp_path):
    """A NaN in one rank's shard, or a chain that raises on one rank, ends the fit on every
    rank with an error (no rank left waiting in a collective)."""
    out = str(tmp_path / "outcome")
    mp.spawn(_failing_rank, args=(str(tmp_path / "store"), out, mode), nprocs=WORLD, join=True)
    zero, one = (open(f"{out}.{r}").read() for r in range(WORLD))
    if mode == "bad-shard":
        assert one.startswith("ValueError") and "y" in one and "NaN" in one, one
        assert zero.startswith("RuntimeError: rank 0: another rank failed"), zero
    else:
        assert one.startswith("ValueError: boom on rank 1"), one
        assert zero.startswith("RuntimeError: a chain failed on another rank: rank 1"), zero


def test_a_simulation_keeps_its_chains_in_this_process():
    """Worker processes would not see the simulation: its chains run here."""
    x, y = _data()
    with simulated(WORLD):
        here = fit(_model(), x, y, num_chains=2, chain_processes=1, **SVI)
        asked = fit(_model(), x, y, num_chains=2, chain_processes=2, **SVI)
    assert here.losses == asked.losses


def _rank(rank: int, store: str, out: str, mode: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                            world_size=WORLD)  # fmt: skip
    try:
        x, y = _data()
        shard = slice(rank * ROWS // WORLD, (rank + 1) * ROWS // WORLD)
        if mode in ("data", "sgld"):
            options = SVI if mode == "data" else SGLD
            post = fit(_model(), x[shard], y[shard], distributed="data", **options)
        else:
            post = fit(_model(), x, y, distributed="chains", **CHAINS)
        assert (post is None) == (rank != 0)
        if rank == 0:
            post.save(out)
    finally:
        # tear down together (gloo aborts a rank left alone), not waiting for a dead one
        dist.monitored_barrier(timeout=datetime.timedelta(seconds=120))
    dist.destroy_process_group()


def _spawn(tmp_path, mode: str):
    out = tmp_path / f"{mode}.safetensors"
    mp.spawn(_rank, args=(str(tmp_path / "store"), str(out), mode), nprocs=WORLD, join=True)
    return load(out)


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_data_parallel_svi_is_the_one_process_fit_on_the_same_global_batches(tmp_path):
    parallel = _spawn(tmp_path, "data")
    x, y = _data()
    with simulated(WORLD):
        single = fit(_model(), x, y, **SVI)
    assert len(parallel.losses[0]) == len(single.losses[0]) == SVI["num_steps"]
    ours, ref = torch.tensor(parallel.losses[0]), torch.tensor(single.losses[0])
    assert torch.allclose(ours, ref, rtol=1e-5, atol=0), (ours - ref).abs().max()
    assert torch.equal(parallel.x_train, x) and torch.equal(parallel.y_train, y)
    for name, value in single.draws.items():
        assert torch.allclose(parallel.draws[name], value, rtol=1e-4, atol=1e-5), name
    assert parallel.options["distributed"] == "data"


def test_data_parallel_sgld_is_the_one_process_chain(tmp_path):
    parallel = _spawn(tmp_path, "sgld")
    x, y = _data()
    with simulated(WORLD):
        single = fit(_model(), x, y, **SGLD)
    for name, value in single.draws.items():
        assert torch.allclose(parallel.draws[name], value, rtol=1e-4, atol=1e-6), name
    assert not torch.equal(single.draws["net.0.weight"][0, 0], single.draws[
        "net.0.weight"][0, -1])  # the chain moved  # fmt: skip


def test_the_global_batches_are_not_one_shard_repeated(tmp_path):
    """The simulated fit differs from a plain fit on the same rows (the batches are
    stratified over the shards), so the test above compares like with like."""
    x, y = _data()
    with simulated(WORLD):
        stratified = fit(_model(), x, y, **SVI)
    plain = fit(_model(), x, y, **SVI)
    assert stratified.losses[0][0] == pytest.approx(plain.losses[0][0], rel=0.5)
    assert stratified.losses[0][1:] != plain.losses[0][1:]


def test_chains_spread_over_ranks_are_the_chains_of_one_process(tmp_path):
    parallel = _spawn(tmp_path, "chains")
    x, y = _data()
    single = fit(_model(), x, y, chain_processes=1, **CHAINS)
    assert parallel.num_chains == CHAINS["num_chains"]
    for name, value in single.draws.items():
        assert torch.equal(parallel.draws[name], value), name


def test_without_a_process_group_the_error_says_how_to_start_one():
    x, y = _data()
    with pytest.raises(RuntimeError, match="torchrun"):
        fit(_model(), x, y, distributed="data", **SVI)
    with pytest.raises(ValueError, match="distributed must be one of"):
        fit(_model(), x, y, distributed="everything", **SVI)


def test_the_batch_must_split_evenly_over_the_shards():
    x, y = _data()
    with simulated(3), pytest.raises(ValueError, match="divisible by the 3 data-parallel"):
        fit(_model(), x[:60], y[:60], **(SVI | dict(batch_size=16)))
