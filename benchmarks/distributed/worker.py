"""One rank of the distributed bench, started by ``torchrun``: a data-parallel
``meanfield`` fit on its shard of the synthetic data; rank 0 writes the timings as JSON.

``python -m torch.distributed.run --standalone --nproc_per_node N -m
benchmarks.distributed.worker --out FILE --rows R --features F --hidden H --batch-size B
--steps S``
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.distributed as dist

from pyro_bnn import fit, zoo


def synthetic(rows: int, features: int, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Protein-sized regression data: y = a random 1-hidden-layer network of x plus noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, features, generator=g)
    w1, w2 = torch.randn(features, 20, generator=g), torch.randn(20, generator=g)
    y = torch.tanh(x @ w1 / features**0.5) @ w2 / 20**0.5
    return x, y + 0.1 * torch.randn(rows, generator=g)


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("rows", "features", "hidden", "batch-size", "steps"):
        parser.add_argument(f"--{name}", type=int, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, size = dist.get_rank(), dist.get_world_size()
    x, y = synthetic(args.rows, args.features)
    shard = args.rows // size
    x, y = x[rank * shard : (rank + 1) * shard], y[rank * shard : (rank + 1) * shard]
    model = zoo.build("mlp-regression", in_features=args.features, hidden=(args.hidden,))
    began = time.perf_counter()
    post = fit(model, x, y, method="meanfield", batch_size=args.batch_size,
               num_steps=args.steps, num_draws=10, distributed="data", seed=0,
               progress_bar=False)  # fmt: skip
    wall = time.perf_counter() - began
    if rank == 0:
        record = {
            "processes": size,
            "steps": int(post.timings["steps"]),
            "steps_s": post.timings["steps_s"],
            "fit_s": wall,
            "final_loss": post.losses[0][-1],
        }
        with open(args.out, "w") as f:
            json.dump(record, f)
    dist.barrier()  # tear down together: gloo aborts a rank left alone
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
