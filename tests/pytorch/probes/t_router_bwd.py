"""Router gradient path on DTensor (torchtitan math), traced per op, per torch version.
Scenarios: EP-off clean boundary (x R, ts.to_local(grad_placements=P), per-rank loss shares)
and EP-on (x S(1), ts.to_local(grad_placements=S(1))). 1-D mesh (2,) and 2-D mesh (2,2)."""
import sys, os
sys.path.insert(0, os.path.dirname(__file__))
from probe import *
import torch.nn.functional as F

def local_of(H, per_rank):
    return LocalTensor({r: per_rank(r) for r in range(H.world)})

def router(x, W, b, score_func, K, route_norm, route_scale, dtype=torch.float32):
    logits = F.linear(x, W, b)
    if score_func == "sigmoid":
        scores = torch.sigmoid(logits.to(torch.float32))
    else:
        scores = F.softmax(logits.to(torch.float32), dim=-1)
    ids = torch.topk(scores.detach(), K, dim=-1, sorted=False).indices
    ts = scores.gather(dim=-1, index=ids)
    if route_norm:
        denom = ts.sum(dim=-1, keepdim=True) + 1e-20
        ts = ts / denom
    ts = ts * route_scale
    return ts

def body(H):
    mshape = (2,) if H.world == 2 else (2, 2)
    m = H.mesh(mshape)
    nd = len(mshape)
    B, L, D, E, K = 2, 4, 4, 8, 2
    torch.manual_seed(0)
    xf = torch.randn(B, L, D); Wf = torch.randn(E, D) * 0.5; bf = torch.randn(E) * 0.1
    scen = []
    if nd == 1:
        scen = [("EPoff x=[R] label=[P]", [R], [P]), ("EPon x=[S(1)] label=[S(1)]", [S(1)], [S(1)]),
                ("x=[R] label=[R] (tt-3654)", [R], [R])]
    else:
        scen = [("dp x S(0), tp EPoff: x=[S(0),R] label=[S(0),P]", [S(0), R], [S(0), P]),
                ("x=[S(0),S(1)] label=[S(0),S(1)]", [S(0), S(1)], [S(0), S(1)]),
                ("x=[R,S(1)] label=[R,S(1)]", [R, S(1)], [R, S(1)])]
    for dtype in (torch.float32, torch.bfloat16):
      for score_func in ("sigmoid", "softmax"):
        for route_norm in (False, True):
          for bias in (False, True):
            if dtype == torch.bfloat16 and (route_norm or bias):
                continue
            for name, xpl, label in scen:
                def fn():
                    x = H.dt(xf.to(dtype), m, xpl, requires_grad=True)
                    W = H.dt(Wf.to(dtype), m, [R] * nd, requires_grad=True)
                    b = H.dt(bf.to(dtype), m, [R] * nd, requires_grad=True) if bias else None
                    note(H, "forward")
                    ts = router(x, W, b, score_func, K, route_norm, 2.5)
                    note(H, f"ts {gdesc(ts)}")
                    tl = ts.to_local(grad_placements=label)
                    g = torch.Generator().manual_seed(1)
                    V = {r: torch.randn(tl.shape, generator=g) for r in range(H.world)}
                    Vl = LocalTensor(V) if not H.gloo else V[H.rank]
                    loss = (tl * Vl).sum()
                    note(H, f"backward (label {pl(label)})")
                    loss.backward()
                    note(H, f"RESULT x.grad {gdesc(x.grad)}; W.grad {gdesc(W.grad)}; b.grad {gdesc(b.grad) if bias else '-'}")
                run(H, f"mesh{mshape} {name} {dtype} {score_func} route_norm={route_norm} bias={bias}", fn,
                    record_ops=None if os.environ.get("CANDS") else ())

if __name__ == "__main__":
    main({2: body, 4: body})
