#!/usr/bin/env python3
"""local_map drops the gradient of a DTensor input whose local tensor is an AsyncCollectiveTensor.

`local_map` (torch.distributed.tensor.experimental) turns each DTensor argument into a plain
tensor with `to_local(grad_placements=...)`, and when that local tensor is an
`AsyncCollectiveTensor` it then calls `.wait()` on it. `AsyncCollectiveTensor.wait()` returns the
waited *inner* tensor, which has no autograd history: the function body sees an input that does
not require grad, so nothing flows back to the DTensor argument (pytorch#151240 is the same
`wait()` behaviour, reported for direct use).

An input is such a tensor after `redistribute(..., async_op=True)` whenever the collective's result
is handed over without a copy: an all-reduce, an all-gather on dim 0, and (since 2.12, the view
path of `all_gather_single`) an all-gather on dim d when every dim before d has size 1 -- e.g.
Shard(1) -> Replicate of a (1, L, D) activation, i.e. sequence parallelism with one batch row.
torchtitan 0.3.0's MoE layer does exactly that (TP + SP, EP off, local batch 1) and loses the
routed experts' part of the input gradient.

The script runs 2 gloo ranks (CPU, forked with torch.multiprocessing). Per case: x global, sharded
over a 2-rank mesh, redistributed to Replicate (async or not), fed to
`local_map(lambda t, w: t @ w)` with `w` a plain tensor that requires grad (so the backward runs
even when x's gradient is lost); the loss is the sum of the output. Expected: x.grad = the rank's
chunk of ones @ w^T on every case. Prints REPRODUCED when an async case loses x.grad while the
synchronous control and the batch-2 control keep it (exit 0), NOT REPRODUCED otherwise (exit 1),
ERROR when it cannot run (exit 2).
"""
import os
import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Replicate, Shard
from torch.distributed.tensor.experimental import local_map

# (name, global shape of x, shard dim, async_op)
CASES = [
    ("Shard(1) (1,4,8) async", (1, 4, 8), 1, True),
    ("Shard(1) (2,4,8) async", (2, 4, 8), 1, True),
    ("Shard(0) (4,8)   async", (4, 8), 0, True),
    ("Shard(1) (1,4,8) sync ", (1, 4, 8), 1, False),
]


def rank_main(rank, world, port, q):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    mesh = init_device_mesh("cpu", (world,), mesh_dim_names=("tp",))
    rows = []
    for name, shape, dim, async_op in CASES:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(shape, generator=g)
        w = torch.randn(shape[-1], 3, generator=g).requires_grad_()
        x_local = x.chunk(world, dim)[rank].clone().requires_grad_()
        xd = DTensor.from_local(x_local, mesh, [Shard(dim)], run_check=False)
        xr = xd.redistribute(mesh, [Replicate()], async_op=async_op)
        kind = type(xr._local_tensor).__name__
        f = local_map(lambda t, w_: t @ w_, out_placements=[Replicate()],
                      in_placements=([Replicate()], None), device_mesh=mesh)
        f(xr, w).to_local().sum().backward()
        want = (torch.ones(*shape[:-1], 3) @ w.detach().t()).chunk(world, dim)[rank]
        if x_local.grad is None:
            got = "x.grad is None"
        else:
            err = (x_local.grad - want).abs().max().item()
            got = "ok" if err < 1e-5 else f"wrong (max err {err:.3g})"
        rows.append((name, kind, got))
    q.put((rank, rows))
    dist.barrier()
    dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    world = 2
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=rank_main, args=(r, world, port, q)) for r in range(world)]
    for p in procs:
        p.start()
    results = dict(q.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    lost = {}
    for i, case in enumerate(CASES):
        outcomes = [results[r][i] for r in range(world)]
        got = "; ".join(f"rank {r}: {o[2]}" for r, o in enumerate(outcomes))
        print(f"  {case[0]}: local input {outcomes[0][1]:<22} {got}")
        lost[case[0].strip()] = any(o[2] != "ok" for o in outcomes)
    names = [c[0].strip() for c in CASES]
    # the two controls: batch 2 (all-gather copies) and async_op=False must keep x's gradient
    controls_ok = not lost[names[1]] and not lost[names[3]]
    async_lost = [n for n in (names[0], names[2]) if lost[n]]
    if async_lost and controls_ok:
        return True, "local_map dropped x's gradient for " + ", ".join(" ".join(n.split()) for n in async_lost)
    if not any(lost.values()):
        return False, "every gradient arrived"
    return False, f"unexpected pattern (case: lost) {lost}"


if __name__ == "__main__":
    print(f"torch {torch.__version__}")
    try:
        reproduced, detail = main()
    except Exception as e:  # noqa: BLE001
        print(f"ERROR: could not run: {type(e).__name__}: {e}")
        sys.exit(2)
    print(("REPRODUCED: " if reproduced else "NOT REPRODUCED: ") + detail)
    sys.exit(0 if reproduced else 1)
