"""The three special topics: (a) softmax on a 2x2 mesh with input [S(2), R] (golden 12),
(b) mm after a flattened two-axis sequence shard x [S(1),S(2)] with gate [R,S(0)] (golden 13),
(c) gather's _MaskPartial (golden 11). Candidate lists with costs are printed (CANDS always on)."""
import sys, os
sys.path.insert(0, os.path.dirname(__file__))
from probe import *
from torch.distributed.tensor.placement_types import _StridedShard
import torch.nn.functional as F
aten = torch.ops.aten

def body(H):
    torch.manual_seed(1)
    if H.world == 4:
        m = H.mesh((2, 2), ("dp_shard", "tp"))
        B, L, D, E = 2, 2, 4, 4
        # (a) golden-12 geometry: logits (B,L,E) [S(2), R]
        lf = torch.randn(B, L, E)
        run(H, "softmax(dim=-1) (2,2,4) input [S(2), R]", lambda: note(H, "RESULT " + gdesc(aten._softmax(H.dt(lf, m, [S(2), R]), -1, False))), record_ops=["softmax"])
        run(H, "softmax(dim=-1) (2,2,4) input [S(2), S(0)]", lambda: note(H, "RESULT " + gdesc(aten._softmax(H.dt(lf, m, [S(2), S(0)]), -1, False))), record_ops=["softmax"])
        run(H, "softmax(dim=-1) (2,2,4) input [R, S(2)]", lambda: note(H, "RESULT " + gdesc(aten._softmax(H.dt(lf, m, [R, S(2)]), -1, False))), record_ops=["softmax"])
        run(H, "softmax(dim=-1) (2,2,4) input [P, R]", lambda: note(H, "RESULT " + gdesc(aten._softmax(H.dt(lf, m, [P, R]), -1, False))), record_ops=["softmax"])
        lf2 = torch.randn(2, 4, 4)
        run(H, "softmax(dim=-1) (2,4,4) input [S(1), S(2)]", lambda: note(H, "RESULT " + gdesc(aten._softmax(H.dt(lf2, m, [S(1), S(2)]), -1, False))), record_ops=["softmax"])
        # golden-12 full gate path
        xf = torch.randn(B, L, D); Wf = torch.randn(E, D) * 0.1
        def g12():
            x = H.dt(xf, m, [R, R]); W = H.dt(Wf, m, [S(0), R])
            lg = F.linear(x, W)
            s = F.softmax(lg.float(), dim=-1)
            note(H, "RESULT logits " + gdesc(lg) + " scores " + gdesc(s))
        run(H, "golden12 path: x [R,R] (2,2,4), gate [S(0),R], softmax", g12, record_ops=["softmax", "aten.mm"])
        # (b) golden-13 geometry: x (2,4,4) [S(1), S(2)], gate (4,4) [R, S(0)]
        B2, L2 = 2, 4
        xf2 = torch.randn(B2, L2, D); Wf2 = torch.randn(E, D) * 0.1
        def g13():
            x = H.dt(xf2, m, [S(1), S(2)]); W = H.dt(Wf2, m, [R, S(0)])
            lg = F.linear(x, W)
            note(H, "RESULT logits " + gdesc(lg))
            s = F.softmax(lg.float(), dim=-1)
            note(H, "RESULT scores " + gdesc(s))
        run(H, "golden13 path: x [S(1),S(2)] (2,4,4), gate [R,S(0)] (4,4), linear+softmax", g13, record_ops=["aten.mm", "softmax"])
        def g13mm():
            x2 = H.dt(xf2.reshape(8, 4), m, [_StridedShard(0, split_factor=2), S(1)])
            wt = H.dt(Wf2.t().contiguous(), m, [R, S(1)])
            y = aten.mm(x2, wt)
            note(H, "RESULT " + gdesc(y))
        run(H, "mm direct: x2 (8,4) [_S(0,2), S(1)] @ Wt (4,4) [R, S(1)]", g13mm, record_ops=["aten.mm"])
        def g13mm_b():
            x2 = H.dt(xf2.reshape(8, 4), m, [S(0), S(1)])
            wt = H.dt(Wf2.t().contiguous(), m, [R, S(1)])
            y = aten.mm(x2, wt)
            note(H, "RESULT " + gdesc(y))
        run(H, "mm direct: x2 (8,4) [S(0), S(1)] @ Wt (4,4) [R, S(1)]", g13mm_b, record_ops=["aten.mm"])
    else:
        m = H.mesh((2,), ("tp",))
        # (c) golden-11 geometry: scores (1,2,4) S(2) (expert-sharded), top_k=1
        sf = torch.rand(1, 2, 4)
        ids = sf.topk(1, dim=-1).indices
        def g11(second="div"):
            s = H.dt(sf, m, [S(2)])
            i = H.dt(ids, m, [R])
            ts = s.gather(-1, i)
            note(H, "gather out " + gdesc(ts) + " " + repr(ts.placements))
            den = ts.sum(dim=-1, keepdim=True) + 1e-20
            note(H, "den " + gdesc(den))
            if second == "div":
                r = ts / den
            else:
                r = ts.redistribute(m, [R])
            note(H, "RESULT " + gdesc(r))
        run(H, "gather (1,2,4) S(2) index (1,2,1) R -> MaskPartial; route_norm", g11, record_ops=["gather", "sum", "div", "add"])
        def g11b():
            s = H.dt(sf, m, [S(2)]); i = H.dt(ids, m, [R])
            ts = s.gather(-1, i)
            a = ts.redistribute(m, [R]); note(H, "first reduction " + gdesc(a))
            b = ts.redistribute(m, [R]); note(H, "second reduction " + gdesc(b))
        run(H, "gather MaskPartial reduced twice via redistribute", g11b, record_ops=["gather"])
        def g11c():
            s = H.dt(sf, m, [S(2)]); i = H.dt(ids, m, [R])
            ts = s.gather(-1, i)
            a = ts * 2.5; note(H, "ts*2.5 " + gdesc(a))
            b = ts + 1.0; note(H, "ts+1 " + gdesc(b))
        run(H, "gather MaskPartial then mul scalar (linear?) then add scalar", g11c, record_ops=["mul", "add"])
        def g11d():
            s = H.dt(sf, m, [S(2)], requires_grad=True); i = H.dt(ids, m, [R])
            ts = s.gather(-1, i)
            note(H, "gather out " + gdesc(ts))
            y = ts * 2.5
            y.backward(H.dt(torch.ones(1, 2, 1), m, [R]))
            note(H, "RESULT scores.grad " + gdesc(s.grad))
        run(H, "gather MaskPartial backward", g11d, record_ops=["gather", "scatter_add", "new_zeros"])
        sfk = torch.rand(1, 2, 4); idk = sfk.topk(2, dim=-1).indices
        def g11e():
            s = H.dt(sfk, m, [S(2)]); i = H.dt(idk, m, [R])
            ts = s.gather(-1, i); note(H, "RESULT K=2 gather " + gdesc(ts))
        run(H, "gather K=2 scores S(2) index R (no MaskPartial)", g11e, record_ops=["gather"])

main({2: body, 4: body})
