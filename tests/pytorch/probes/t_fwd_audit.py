"""Forward audit of the router's ops, torch 2.12.1 / 2.13.0 / 2.14.0: each op called on DTensors
with chosen placements; records output placements, input redistributions, comms, errors.
1-D mesh (2,) [world 2] and 2-D mesh (2,2) [world 4]."""
import sys, os
sys.path.insert(0, os.path.dirname(__file__))
from probe import *
aten = torch.ops.aten
B, L, D, E, K = 2, 4, 4, 8, 2

def P_(op="sum"):
    return Partial(op)

def cases1d():
    c = []
    add = lambda label, f: c.append((label, f))
    g = torch.Generator().manual_seed(0)
    rn = lambda *s: torch.randn(*s, generator=g)
    x3, W, b = rn(B, L, D), rn(E, D), rn(E)
    s3 = torch.rand(B, L, E, generator=g)
    ids = s3.topk(K, -1).indices
    # t
    for p in [[S(0)], [S(1)], [P_()]]:
        add(f"t W(E,D) {pl(p)}", lambda H, m, p=p: aten.t(H.dt(W, m, p)))
    add("t W(1,D) [S(0)] (size-1 dim sharded over 2)", lambda H, m: aten.t(H.dt(W[:1], m, [S(0)])))
    # view / unsqueeze
    add("view (B,L,E)[S(1)] -> (B*L,E)", lambda H, m: aten.view(H.dt(s3, m, [S(1)]), [B * L, E]))
    add("view (B,3,E)[S(1)] (uneven L=3) -> (B*3,E)", lambda H, m: aten.view(H.dt(s3[:, :3], m, [S(1)]), [B * 3, E]))
    add("view (B,L,E)[S(2)] -> (B,L,2,4)", lambda H, m: aten.view(H.dt(s3, m, [S(2)]), [B, L, 2, 4]))
    add("unsqueeze (B,L,K)[S(1)] dim -1", lambda H, m: aten.unsqueeze(H.dt(ids, m, [S(1)]), -1))
    # mm / addmm
    xf = x3.reshape(B * L, D)
    for px, pw in [([S(0)], [R]), ([S(1)], [R]), ([R], [S(1)]), ([R], [S(0)]), ([P_()], [R]), ([S(0)], [S(1)])]:
        add(f"mm x(T,D){pl(px)} @ Wt(D,E){pl(pw)}", lambda H, m, px=px, pw=pw: aten.mm(H.dt(xf, m, px), H.dt(W.t().contiguous(), m, pw)))
    add("mm x=view((B,L,D)[S(1)]) [_S(0,2)] @ Wt [R]", lambda H, m: aten.mm(H.dt(x3, m, [S(1)]).view(B * L, D), H.dt(W.t().contiguous(), m, [R])))
    add("mm x=view((B,L,D)[S(1)]) [_S(0,2)] @ Wt [S(1)]", lambda H, m: aten.mm(H.dt(x3, m, [S(1)]).view(B * L, D), H.dt(W.t().contiguous(), m, [S(1)])))
    for px, pw, pb in [([S(1)], [R], [R]), ([S(0)], [R], [R]), ([R], [S(1)], [R]), ([R], [S(1)], [S(0)]), ([R], [R], [P_()]), ([P_()], [R], [R])]:
        add(f"addmm bias(E,){pl(pb)} x(T,D){pl(px)} Wt(D,E){pl(pw)}", lambda H, m, px=px, pw=pw, pb=pb: aten.addmm(
            H.dt(b, m, pb), H.dt(xf, m, px), H.dt(W.t().contiguous(), m, pw)))
    # _to_copy / sigmoid / softmax
    for p in [[P_()], [S(2)], [P_("max")]]:
        add(f"_to_copy f32->bf16 {pl(p)}", lambda H, m, p=p: aten._to_copy(H.dt(s3, m, p), dtype=torch.bfloat16))
        add(f"sigmoid {pl(p)}", lambda H, m, p=p: aten.sigmoid(H.dt(s3, m, p)))
    for p in [[S(2)], [S(1)], [P_()], [S(0)]]:
        add(f"_softmax(-1) (B,L,E) {pl(p)}", lambda H, m, p=p: aten._softmax(H.dt(s3, m, p), -1, False))
    add("_softmax(-1) (1,E) [S(0)] (size-1 dim sharded)", lambda H, m: aten._softmax(H.dt(s3[0, :1], m, [S(0)]), -1, False))
    add("_softmax(-1) (B,3,E) [S(1)] uneven", lambda H, m: aten._softmax(H.dt(s3[:, :3], m, [S(1)]), -1, False))
    # add/mul/div
    for ps, pb in [([S(2)], [R]), ([S(2)], [S(0)]), ([R], [S(0)]), ([P_()], [R]), ([S(1)], [R])]:
        add(f"add.Tensor scores(B,L,E){pl(ps)} + bias(E,){pl(pb)}", lambda H, m, ps=ps, pb=pb: aten.add.Tensor(H.dt(s3, m, ps), H.dt(b, m, pb)))
    for p in [[P_()], [S(2)], [P_("max")]]:
        add(f"add.Tensor {pl(p)} + 1e-20", lambda H, m, p=p: aten.add.Tensor(H.dt(s3, m, p), 1e-20))
        add(f"mul.Tensor {pl(p)} * 2.5", lambda H, m, p=p: aten.mul.Tensor(H.dt(s3, m, p), 2.5))
        add(f"div.Tensor {pl(p)} / 2.5", lambda H, m, p=p: aten.div.Tensor(H.dt(s3, m, p), 2.5))
    ts = torch.rand(B, L, K, generator=g)
    for pn, pd in [([S(2)], [R]), ([S(1)], [S(1)]), ([P_()], [R]), ([R], [P_()]), ([S(2)], [S(1)])]:
        add(f"div.Tensor (B,L,K){pl(pn)} / (B,L,1){pl(pd)}", lambda H, m, pn=pn, pd=pd: aten.div.Tensor(H.dt(ts, m, pn), H.dt(ts.sum(-1, keepdim=True), m, pd)))
    # sum
    for p in [[S(2)], [S(1)], [P_()], [P_("max")]]:
        add(f"sum.dim_IntList(-1, keepdim) (B,L,K){pl(p)}", lambda H, m, p=p: aten.sum.dim_IntList(H.dt(ts, m, p), [-1], True))
    rm = torch.zeros(B, L, E, dtype=torch.bool).scatter_(-1, ids, True)
    for p in [[S(1)], [S(0)], [S(2)]]:
        add(f"sum.dim_IntList([0,1]) bool map (B,L,E){pl(p)} (counts)", lambda H, m, p=p: aten.sum.dim_IntList(H.dt(rm, m, p), [0, 1]))
    # topk / sort
    for p in [[S(2)], [S(1)], [P_()], [S(0)]]:
        add(f"topk(K,-1) (B,L,E){pl(p)}", lambda H, m, p=p: aten.topk(H.dt(s3, m, p), K, -1, True, False))
    add("topk(K,-1) (1,E)[S(0)] size-1 sharded", lambda H, m: aten.topk(H.dt(s3[0, :1], m, [S(0)]), K, -1, True, False))
    add("topk(K,-1) (B,3,E)[S(1)] uneven", lambda H, m: aten.topk(H.dt(s3[:, :3], m, [S(1)]), K, -1, True, False))
    for p in [[S(2)], [S(1)]]:
        add(f"sort.stable(dim=-1) (B,L,E){pl(p)}", lambda H, m, p=p: aten.sort.stable(H.dt(s3, m, p), stable=True, dim=-1, descending=True))
    # gather
    for ps, pi in [([S(2)], [R]), ([S(1)], [S(1)]), ([R], [S(1)]), ([S(1)], [R]), ([P_()], [R]), ([S(2)], [S(1)])]:
        add(f"gather(-1) scores{pl(ps)} ids(B,L,K){pl(pi)}", lambda H, m, ps=ps, pi=pi: aten.gather(H.dt(s3, m, ps), -1, H.dt(ids, m, pi)))
    add("gather(-1) scores[S(2)] ids(B,L,1)[R] (MaskPartial)", lambda H, m: aten.gather(H.dt(s3, m, [S(2)]), -1, H.dt(ids[..., :1], m, [R])))
    add("gather(-1) scores[_S(0,2)] (T,E) ids[_S(0,2)] (via view)", lambda H, m: aten.gather(H.dt(s3, m, [S(1)]).view(B * L, E), -1, H.dt(ids, m, [S(1)]).view(B * L, K)))
    # scatter
    for ps, pi in [([S(1)], [S(1)]), ([S(2)], [R]), ([R], [S(1)]), ([S(1)], [R])]:
        add(f"scatter.value(-1,True) self bool{pl(ps)} ids{pl(pi)}", lambda H, m, ps=ps, pi=pi: aten.scatter.value(H.dt(torch.zeros(B, L, E, dtype=torch.bool), m, ps), -1, H.dt(ids, m, pi), True))
        add(f"scatter_.value(-1,True) self bool{pl(ps)} ids{pl(pi)}", lambda H, m, ps=ps, pi=pi: aten.scatter_.value(H.dt(torch.zeros(B, L, E, dtype=torch.bool), m, ps), -1, H.dt(ids, m, pi), True))
    add("scatter.src(-1) self[S(1)] ids[S(1)] src(B,L,K)[S(1)]", lambda H, m: aten.scatter.src(H.dt(torch.zeros(B, L, E), m, [S(1)]), -1, H.dt(ids, m, [S(1)]), H.dt(ts, m, [S(1)])))
    add("scatter_.value self=view (T,E)[_S(0,2)] ids view [_S(0,2)]", lambda H, m: aten.scatter_.value(H.dt(torch.zeros(B, L, E, dtype=torch.bool), m, [S(1)]).view(B * L, E), -1, H.dt(ids, m, [S(1)]).view(B * L, K), True))
    # masked_fill
    gm = torch.rand(B, L, 4, generator=g) > 0.5
    s4 = s3.view(B, L, 4, 2)
    for ps, pm in [([S(1)], [S(1)]), ([S(2)], [S(2)]), ([S(3)], [R]), ([P_()], [R])]:
        add(f"masked_fill.Scalar (B,L,G,P){pl(ps)} mask(B,L,G,1){pl(pm)}", lambda H, m, ps=ps, pm=pm: aten.masked_fill.Scalar(H.dt(s4, m, ps), H.dt(gm.unsqueeze(-1), m, pm), float("-inf")))
    # like
    for p in [[P_()], [S(1)], [R]]:
        add(f"ones_like {pl(p)}", lambda H, m, p=p: aten.ones_like(H.dt(s3, m, p)))
        add(f"zeros_like(bool) {pl(p)}", lambda H, m, p=p: aten.zeros_like(H.dt(s3, m, p), dtype=torch.bool))
    # cumsum
    for p in [[P_()], [S(0)], [S(1)]]:
        add(f"cumsum(dim=0) (T,E){pl(p)}", lambda H, m, p=p: aten.cumsum(H.dt(s3.reshape(B * L, E), m, p), 0))
    return c

def cases2d():
    c = []
    add = lambda label, f: c.append((label, f))
    g = torch.Generator().manual_seed(0)
    s3 = torch.rand(B, L, E, generator=g)
    ids = s3.topk(K, -1).indices
    ts = torch.rand(B, L, K, generator=g)
    for p in [[S(2), R], [R, S(2)], [S(2), S(0)], [S(1), S(2)], [P_(), R], [S(0), P_()], [S(2), S(2)]]:
        add(f"_softmax(-1) {pl(p)}", lambda H, m, p=p: aten._softmax(H.dt(s3, m, p), -1, False))
        add(f"topk(K,-1) {pl(p)}", lambda H, m, p=p: aten.topk(H.dt(s3, m, p), K, -1, True, False))
        add(f"sort.stable(-1) {pl(p)}", lambda H, m, p=p: aten.sort.stable(H.dt(s3, m, p), stable=True, dim=-1, descending=True))
        add(f"sigmoid {pl(p)}", lambda H, m, p=p: aten.sigmoid(H.dt(s3, m, p)))
        add(f"cumsum(dim=2) {pl(p)}", lambda H, m, p=p: aten.cumsum(H.dt(s3, m, p), 2))
        add(f"sum.dim_IntList([0,1]) {pl(p)}", lambda H, m, p=p: aten.sum.dim_IntList(H.dt(s3, m, p), [0, 1]))
    for ps, pi in [([S(2), R], [R, R]), ([S(0), S(2)], [S(0), R]), ([R, S(0)], [R, R]), ([S(2), R], [S(1), R]), ([S(0), S(1)], [S(0), S(1)])]:
        add(f"gather(-1) scores{pl(ps)} ids{pl(pi)}", lambda H, m, ps=ps, pi=pi: aten.gather(H.dt(s3, m, ps), -1, H.dt(ids, m, pi)))
    add("gather(-1) scores[S(0),S(2)] ids(B,L,1)[S(0),R] (MaskPartial)", lambda H, m: aten.gather(H.dt(s3, m, [S(0), S(2)]), -1, H.dt(ids[..., :1], m, [S(0), R])))
    for ps, pi in [([S(0), S(1)], [S(0), S(1)]), ([R, S(1)], [R, S(1)]), ([S(0), R], [S(0), S(1)]), ([S(2), R], [R, R])]:
        add(f"scatter_.value self bool{pl(ps)} ids{pl(pi)}", lambda H, m, ps=ps, pi=pi: aten.scatter_.value(H.dt(torch.zeros(B, L, E, dtype=torch.bool), m, ps), -1, H.dt(ids, m, pi), True))
        add(f"scatter.value self bool{pl(ps)} ids{pl(pi)}", lambda H, m, ps=ps, pi=pi: aten.scatter.value(H.dt(torch.zeros(B, L, E, dtype=torch.bool), m, ps), -1, H.dt(ids, m, pi), True))
    add("scatter_.value self view [S(0),_S(0,1)]... (B,L,E)[S(0),S(1)].view(T,E)", lambda H, m: aten.scatter_.value(H.dt(torch.zeros(B, L, E, dtype=torch.bool), m, [S(0), S(1)]).view(B * L, E), -1, H.dt(ids, m, [S(0), S(1)]).view(B * L, K), True))
    for pn, pd in [([S(2), R], [R, R]), ([S(0), P_()], [S(0), R]), ([R, S(2)], [R, S(1)])]:
        add(f"div.Tensor (B,L,K){pl(pn)} / (B,L,1){pl(pd)}", lambda H, m, pn=pn, pd=pd: aten.div.Tensor(H.dt(ts, m, pn), H.dt(ts.sum(-1, keepdim=True), m, pd)))
    return c

def body(H):
    nd = 1 if H.world == 2 else 2
    m = H.mesh((2,) if nd == 1 else (2, 2))
    sel = os.environ.get("SEL")
    for label, f in (cases1d() if nd == 1 else cases2d()):
        if sel and sel not in label:
            continue
        def fn(f=f):
            y = f(H, m)
            note(H, "RESULT " + (gdesc(y) if not isinstance(y, (tuple, list)) else ", ".join(gdesc(t) for t in y)))
        run(H, f"mesh{tuple(m.shape)} {label}", fn, record_ops=None if os.environ.get("CANDS") else ())

main({2: body, 4: body})
