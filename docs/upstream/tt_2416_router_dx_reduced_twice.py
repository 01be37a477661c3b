#!/usr/bin/env python3
"""torchtitan MoE (#2416 up to #3386): the router's share of x.grad is reduced twice, n times too large.

The boundary code of torchtitan from #2416 (2026-03-02) to #3386 (2026-05-20), written out with
torch only, on a 1-D tensor-parallel mesh of 2 gloo ranks:

  PrepareModuleInputOutput   x = x_in.redistribute(tp, [Replicate()])       (backward: P -> R)
  MoE.forward                xl = x.to_local(grad_placements=(Partial(),)).view(-1, dim)
  NoParallel (router.gate)   xg = DTensor.from_local(xl, tp, [Replicate()]) (no grad placement)
                             logits = F.linear(xg, W)                       (W: Replicate param)
                             sl = logits.to_local(grad_placements=(Partial(),))
  router body (local)        scores = sigmoid(sl); each rank's loss share is scores . v_rank

Backward: sl's gradient is labelled Partial, so linear's dx is Partial and from_local(Replicate)'s
backward all-reduces it: every rank holds the complete router dx. MoE.forward's
to_local(grad_placements=Partial) then declares that complete value a partial sum, and the P -> R
step at the MoE input sums the n copies again: x.grad's router share is n times the true gradient
(W.grad is right). #3386 removed the gate's from_local and with it the bug.

Expected: x_in.grad equals the float64 reference. Prints REPRODUCED / NOT REPRODUCED (with the
ratio <g, ref> / <ref, ref>); exit 0 when reproduced, 1 when not, 2 when it could not run.
"""
import logging
import os
import sys
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

logging.disable(logging.WARNING)
WORLD, T, D, E = 2, 1, 4, 4


def inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, T, D, generator=g)
    w = torch.randn(E, D, generator=g)
    v = torch.randn(WORLD, T, E, generator=g)  # each rank's share of the scores' gradient
    return x, w, v


def rank_main(rank, init_file, out_file):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Partial, Replicate, distribute_tensor

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    tp = init_device_mesh("cpu", (WORLD,), mesh_dim_names=("tp",))
    x, w, v = inputs()
    x_in = distribute_tensor(x, tp, [Replicate()]).requires_grad_()
    W = distribute_tensor(w, tp, [Replicate()]).requires_grad_()

    xr = x_in.redistribute(tp, [Replicate()])
    xl = xr.to_local(grad_placements=(Partial(),)).view(-1, D)
    xg = DTensor.from_local(xl, tp, [Replicate()], run_check=False)
    logits = F.linear(xg, W)
    sl = logits.to_local(grad_placements=(Partial(),))
    loss = (torch.sigmoid(sl) * v[rank]).sum()
    loss.backward()

    gx = x_in.grad.full_tensor()
    gw = W.grad.full_tensor()
    if rank == 0:
        torch.save({"gx": gx, "gw": gw, "px": str(x_in.grad.placements), "pw": str(W.grad.placements)}, out_file)
    dist.barrier()
    dist.destroy_process_group()


def main():
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "out.pt")
        mp.spawn(rank_main, args=(os.path.join(d, "init"), out), nprocs=WORLD, join=True)
        got = torch.load(out)
    x, w, v = inputs()
    xr, wr = x.double().requires_grad_(), w.double().requires_grad_()
    (torch.sigmoid(F.linear(xr.view(-1, D), wr)) * v.double().sum(0)).sum().backward()
    ratio = lambda g, ref: float((g.double() * ref).sum() / (ref * ref).sum())  # noqa: E731
    rx, rw = ratio(got["gx"], xr.grad), ratio(got["gw"], wr.grad)
    print(f"  x.grad {got['px']}: <g,ref>/<ref,ref> = {rx:.3f}; W.grad {got['pw']}: {rw:.3f} ({WORLD} ranks)")
    if abs(rx - WORLD) < 1e-3 and abs(rw - 1) < 1e-3:
        return True, f"x.grad is {rx:.3f} x the reference on {WORLD} ranks (W.grad right)"
    return False, f"x.grad ratio {rx:.3f}, W.grad ratio {rw:.3f}"


if __name__ == "__main__":
    print(f"torch {torch.__version__}")
    try:
        reproduced, detail = main()
    except Exception as e:  # noqa: BLE001
        print(f"ERROR: could not run: {type(e).__name__}: {e}")
        sys.exit(2)
    print(("REPRODUCED: " if reproduced else "NOT REPRODUCED: ") + detail)
    sys.exit(0 if reproduced else 1)
