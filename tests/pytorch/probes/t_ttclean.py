"""tt-clean boundary (EP off, SP on): x_in S(1) -> redistribute R -> router on DTensor ->
ts.to_local(grad_placements=P) -> per-rank loss. Reports grad placements at each site."""
import sys, os
sys.path.insert(0, os.path.dirname(__file__))
from probe import *
from t_router_bwd import router
def body(H):
    m = H.mesh((2,))
    B, L, D, E, K = 2, 4, 4, 8, 2
    torch.manual_seed(0)
    xf = torch.randn(B, L, D); Wf = torch.randn(E, D) * 0.5
    for sp, lab in [([S(1)], [P]), ([R], [P]), ([S(1)], [R])]:
        def f(sp=sp, lab=lab):
            x_in = H.dt(xf, m, sp, requires_grad=True)
            W = H.dt(Wf, m, [R], requires_grad=True)
            x = x_in.redistribute(m, [R])
            x.retain_grad()
            ts = router(x, W, None, "sigmoid", K, True, 1.0)
            tl = ts.to_local(grad_placements=lab)
            g = torch.Generator().manual_seed(1)
            V = LocalTensor({r: torch.randn(tl.shape, generator=g) for r in range(H.world)})
            note(H, "backward")
            (tl * V).sum().backward()
            note(H, f"RESULT router-input x.grad {gdesc(x.grad)}; x_in.grad {gdesc(x_in.grad)}; W.grad {gdesc(W.grad)}")
        run(H, f"tt-clean-like: x_in {pl(sp)} -> R, label {pl(lab)}", f)
main({2: body})
