"""dW = mm(grad^T, x) on a 2x2 mesh when grad (B,L,E) is [S(0),S(1)] and x (B,L,D) is [S(0),R]:
grad.view(T,E) = [S(0), _S(0,1)], t -> [S(1), _S(1,1)]; candidate list with costs."""
import sys, os
sys.path.insert(0, os.path.dirname(__file__))
from probe import *
aten = torch.ops.aten
def body(H):
    m = H.mesh((2, 2))
    B, L, D, E = 2, 4, 4, 8
    gf = torch.randn(B, L, E); xf = torch.randn(B, L, D)
    def f():
        g = H.dt(gf, m, [S(0), S(1)]).view(B * L, E)
        x = H.dt(xf, m, [S(0), R]).view(B * L, D)
        y = aten.mm(aten.t(g), x)
        note(H, "RESULT " + gdesc(y))
    run(H, "dW mm(t(view(grad [S(0),S(1)])), view(x [S(0),R]))", f, record_ops=["aten.mm"], maxc=200)
main({4: body})
