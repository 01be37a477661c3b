#!/usr/bin/env python3
"""torchtitan closed PR #2388: with score_before_experts and TP-sharded experts, labelling the gate
output Partial sums n complete gradients: every router gradient is n times too large.

PR #2388 (closed, not merged) changes the router gate's `outputs.to_local()` to
`to_local(grad_placements=(Partial(),))` in every configuration. Written out with torch only, on a
1-D tensor-parallel mesh of 2 gloo ranks, with score_before_experts=True and the experts
tensor-parallel (ETP = TP), the boundary code of that time (torchtitan before #2416):

  MoE input                  xl = x_in.to_local()                                (label Replicate)
  NoParallel (router.gate)   xg = DTensor.from_local(xl, tp, [Replicate()]); logits = F.linear(xg, W)
                             sl = logits.to_local(grad_placements=(Partial(),))  (PR #2388)
  router body (local)        scores = sigmoid(sl)
  score_before_experts       routed_input = xl * scores[:, :1]                   (token x its score)
  TensorParallel (#1878)     ri = DTensor.from_local(routed_input, tp, [Replicate()])
                                   .to_local(grad_placements=(Partial(),))
  experts (TP)               out_r = ri @ w1[:, cols_r] @ w2[cols_r, :]           (a partial sum)

Backward: #1878's from_local(Replicate) all-reduces the experts' partial input gradient, so each
rank's gradient of `scores` is already complete; the Partial label of #2388 then sums those n
complete copies: W.grad and x's router share are n times too large. (#2416 chose another fix; this
script documents why the closed PR would have been wrong for Llama 4's default.)

Expected: W.grad equals the float64 reference. Prints REPRODUCED / NOT REPRODUCED (with the ratio
<g, ref> / <ref, ref>); exit 0 when reproduced, 1 when not, 2 when it could not run.
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
WORLD, T, D, E, H = 2, 1, 4, 4, 6


def inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, T, D, generator=g)
    w = torch.randn(E, D, generator=g)
    w1 = torch.randn(D, H, generator=g)  # the expert, column-sharded over tp
    w2 = torch.randn(H, D, generator=g)  # row-sharded over tp
    return x, w, (w1, w2)


def rank_main(rank, init_file, out_file):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Partial, Replicate, distribute_tensor

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    tp = init_device_mesh("cpu", (WORLD,), mesh_dim_names=("tp",))
    x, w, (w1, w2) = inputs()
    cols = slice(rank * H // WORLD, (rank + 1) * H // WORLD)
    x_in = distribute_tensor(x, tp, [Replicate()]).requires_grad_()
    W = distribute_tensor(w, tp, [Replicate()]).requires_grad_()

    xl = x_in.to_local().view(-1, D)
    xg = DTensor.from_local(xl, tp, [Replicate()], run_check=False)
    logits = F.linear(xg, W)
    sl = logits.to_local(grad_placements=(Partial(),))
    scores = torch.sigmoid(sl)
    routed_input = xl * scores[:, :1]
    ri = DTensor.from_local(routed_input, tp, [Replicate()], run_check=False).to_local(
        grad_placements=(Partial(),))
    out = ri @ w1[:, cols] @ w2[cols, :]
    out.sum().backward()

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
    x, w, (w1, w2) = inputs()
    xr, wr = x.double().requires_grad_(), w.double().requires_grad_()
    xv = xr.view(-1, D)
    ((xv * torch.sigmoid(F.linear(xv, wr))[:, :1]) @ w1.double() @ w2.double()).sum().backward()
    ratio = lambda g, ref: float((g.double() * ref).sum() / (ref * ref).sum())  # noqa: E731
    rx, rw = ratio(got["gx"], xr.grad), ratio(got["gw"], wr.grad)
    print(f"  x.grad {got['px']}: <g,ref>/<ref,ref> = {rx:.3f}; W.grad {got['pw']}: {rw:.3f} ({WORLD} ranks)")
    if abs(rw - WORLD) < 1e-3:
        return True, f"W.grad is {rw:.3f} x the reference on {WORLD} ranks"
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
