"""Two-process gloo DDP check of SAM on CPU, run by test_ddp.py as a script.

Each rank holds half of a global batch. The first pass runs under ``model.no_sync()``, so each rank
perturbs with its *local* gradient; the second pass is all-reduced, so both ranks apply the mean of
the per-rank perturbed gradients. Rank 0 checks the replicas against a single-process reference and
writes ``OK <max error>`` to the file named in argv[2].
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from fmlab.sam import SAM

RHO, LR, STEPS, WORLD = 0.2, 0.1, 3, 2


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def data(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(16, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (16,),
                                                                               generator=g)


def reference() -> list[torch.Tensor]:
    """Local-gradient perturbation per shard, averaged perturbed gradients, SGD step."""
    model = make_model()
    params = list(model.parameters())
    for step in range(STEPS):
        x, y = data(step)
        total = [torch.zeros_like(p) for p in params]
        for xs, ys in zip(x.chunk(WORLD), y.chunk(WORLD), strict=True):
            g = torch.autograd.grad(nn.functional.cross_entropy(model(xs), ys), params)
            norm = torch.sqrt(sum((gi**2).sum() for gi in g))
            with torch.no_grad():
                for p, gi in zip(params, g, strict=True):
                    p.add_(RHO * gi / norm)
            g_sam = torch.autograd.grad(nn.functional.cross_entropy(model(xs), ys), params)
            with torch.no_grad():
                for p, gi in zip(params, g, strict=True):
                    p.sub_(RHO * gi / norm)
            total = [t + gs / WORLD for t, gs in zip(total, g_sam, strict=True)]
        with torch.no_grad():
            for p, t in zip(params, total, strict=True):
                p.sub_(LR * t)
    return [p.detach() for p in params]


def worker(rank: int, init_file: str, out_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD)
    model = DDP(make_model())
    opt = SAM(model.parameters(), torch.optim.SGD, rho=RHO, lr=LR)
    for step in range(STEPS):
        x, y = data(step)
        xs, ys = x.chunk(WORLD)[rank], y.chunk(WORLD)[rank]
        with model.no_sync():  # local gradient -> local eps
            nn.functional.cross_entropy(model(xs), ys).backward()
        opt.first_step()
        nn.functional.cross_entropy(model(xs), ys).backward()  # all-reduced
        opt.second_step(zero_grad=True)
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(WORLD)]
    dist.all_gather(gathered, flat)
    if rank == 0:
        ref = torch.cat([p.flatten() for p in reference()])
        replica_gap = float((gathered[0] - gathered[1]).abs().max())
        ref_err = float((gathered[0] - ref).abs().max())
        moved = float((ref - torch.cat([p.detach().flatten() for p in make_model().parameters()]))
                      .abs().max())
        with open(out_file, "w") as fh:
            fh.write(f"OK {replica_gap} {ref_err} {moved}\n")
    dist.destroy_process_group()


if __name__ == "__main__":
    torch.set_num_threads(1)
    init_file, out_file = sys.argv[1], sys.argv[2]
    if os.path.exists(init_file):
        os.remove(init_file)
    # fork: the children inherit the imported torch (spawn would import it again in each).
    mp.start_processes(worker, args=(init_file, out_file), nprocs=WORLD, join=True,
                       start_method="fork")
