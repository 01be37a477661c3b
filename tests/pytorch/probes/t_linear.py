import sys, os
sys.path.insert(0, os.path.dirname(__file__))
from probe import *
import torch.nn.functional as F

def body(H):
    for mshape in ([(2,)] if H.world == 2 else [(2, 2)]):
        m = H.mesh(mshape)
        nd = len(mshape)
        torch.manual_seed(0)
        D, E = 4, 6
        cases = [((8, D), [R]), ((8, D), [S(0)]), ((2, 4, D), [R]), ((2, 4, D), [S(1)])]
        if nd == 2:
            cases = [((8, D), [R, R]), ((8, D), [S(0), R]), ((8, D), [R, S(0)]), ((8, D), [S(0), S(0)]),
                     ((2, 4, D), [R, R]), ((2, 4, D), [R, S(1)]), ((2, 4, D), [S(0), S(1)]), ((2, 4, D), [S(1), R])]
        for xshape, xpl in cases:
            for bias in (False, True):
                xf = torch.randn(*xshape); Wf = torch.randn(E, D); bf = torch.randn(E)
                def fn():
                    x = H.dt(xf, m, xpl, requires_grad=True)
                    W = H.dt(Wf, m, [R] * nd, requires_grad=True)
                    b = H.dt(bf, m, [R] * nd, requires_grad=True) if bias else None
                    note(H, "forward")
                    y = F.linear(x, W, b)
                    gpl = [R if isinstance(p, Partial) else p for p in y.placements]
                    g = H.dt(torch.randn(*y.shape), m, gpl)
                    note(H, f"backward, grad_out {pl(gpl)}")
                    y.backward(g)
                    note(H, f"RESULT y {gdesc(y)}; x.grad {gdesc(x.grad)}; W.grad {gdesc(W.grad)}; b.grad {gdesc(b.grad) if bias else '-'}")
                    ok = torch.allclose(x.grad.full_tensor(), (g.full_tensor() @ Wf)) and torch.allclose(W.grad.full_tensor(), g.full_tensor().reshape(-1, E).t() @ xf.reshape(-1, D), atol=1e-5)
                    note(H, f"values ok: {ok}")
                run(H, f"mesh{mshape} linear x{list(xshape)} {pl(xpl)} W {pl([R]*nd)} bias={bias}", fn,
                    record_ops=["addmm", "aten.mm", "sum"] if os.environ.get("CANDS") else ())

main({2: body, 4: body})
