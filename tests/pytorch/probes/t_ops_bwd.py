"""Backward-op micro cases: call each aten op directly on DTensors with the given placements and
record the chosen strategy (output placements, input redistributions) and, with CANDS=1, every
candidate with its cost. 1-D mesh (2,) [world 2] and 2-D mesh (2,2) [world 4]."""
import sys, os
sys.path.insert(0, os.path.dirname(__file__))
from probe import *
aten = torch.ops.aten

T, E, K = 4, 8, 2
B, L = 2, 4

def cases1d():
    PL = {"R": [R], "P": [P], "S0": [S(0)], "S1": [S(1)], "S2": [S(2)]}
    out = []
    # sigmoid_backward(grad, output)
    for g in ["R", "P", "S0", "S1"]:
        for o in ["R", "S0", "S1"]:
            out.append((f"sigmoid_backward g={g} out={o}", lambda H, m, g=g, o=o: aten.sigmoid_backward(
                H.dt(torch.randn(T, E), m, PL[g]), H.dt(torch.rand(T, E), m, PL[o]))))
    # _softmax_backward_data(grad, output, dim, dtype)
    for g in ["R", "P", "S0", "S1"]:
        for o in ["R", "S0", "S1"]:
            out.append((f"_softmax_backward_data(dim=-1) g={g} out={o}", lambda H, m, g=g, o=o: aten._softmax_backward_data(
                H.dt(torch.randn(T, E), m, PL[g]), H.dt(torch.softmax(torch.randn(T, E), -1), m, PL[o]), -1, torch.float32)))
    # _to_copy
    for g in ["R", "P", "S0"]:
        out.append((f"_to_copy(bf16) g={g}", lambda H, m, g=g: aten._to_copy(H.dt(torch.randn(T, E), m, PL[g]), dtype=torch.bfloat16)))
    # factories
    for g in ["R", "P", "S0", "S1"]:
        out.append((f"new_zeros (T,K)->(T,E) in={g}", lambda H, m, g=g: aten.new_zeros(H.dt(torch.randn(T, K), m, PL[g]), [T, E])))
        out.append((f"new_zeros same shape in={g}", lambda H, m, g=g: aten.new_zeros(H.dt(torch.randn(T, K), m, PL[g]), [T, K])))
        out.append((f"new_empty same shape in={g}", lambda H, m, g=g: aten.new_empty(H.dt(torch.randn(T, K), m, PL[g]), [T, K])))
        out.append((f"new_empty (T,K)->(T,E) in={g}", lambda H, m, g=g: aten.new_empty(H.dt(torch.randn(T, K), m, PL[g]), [T, E])))
        out.append((f"zeros_like in={g}", lambda H, m, g=g: aten.zeros_like(H.dt(torch.randn(T, K), m, PL[g]))))
        out.append((f"ones_like in={g}", lambda H, m, g=g: aten.ones_like(H.dt(torch.randn(T, K), m, PL[g]))))
    # scatter_add(self, dim, index, src)
    idx = torch.stack([torch.randperm(E)[:K] for _ in range(T)])
    for s in ["R", "S0"]:
        for i in ["R", "S0"]:
            for g in ["R", "P", "S0"]:
                out.append((f"scatter_add(dim=-1) self={s} index={i} src={g}", lambda H, m, s=s, i=i, g=g: aten.scatter_add(
                    H.dt(torch.zeros(T, E), m, PL[s]), -1, H.dt(idx, m, PL[i]), H.dt(torch.randn(T, K), m, PL[g]))))
    idx3 = torch.stack([torch.randperm(E)[:K] for _ in range(B * L)]).reshape(B, L, K)
    for i, g in [("S1", "S1"), ("S1", "P"), ("R", "S1"), ("S0", "S0")]:
        out.append((f"scatter_add 3-D (B,L,E) self=R index={i} src={g}", lambda H, m, i=i, g=g: aten.scatter_add(
            H.dt(torch.zeros(B, L, E), m, [R]), -1, H.dt(idx3, m, PL[i]), H.dt(torch.randn(B, L, K), m, PL[g]))))
    # 2-D (T,E) scatter_add with T=1 (B*L=1): S(0) not shardable
    idx1 = idx[:1]
    out.append(("scatter_add T=1 self=R index=R src=P", lambda H, m: aten.scatter_add(
        H.dt(torch.zeros(1, E), m, [R]), -1, H.dt(idx1, m, [R]), H.dt(torch.randn(1, K), m, [P]))))
    # expand / sum
    for g in ["R", "P", "S0", "S1"]:
        out.append((f"expand (B,L,1)->(B,L,K) g={g}", lambda H, m, g=g: aten.expand(H.dt(torch.randn(B, L, 1), m, PL[g]), [B, L, K])))
    for g in ["R", "P", "S0", "S1", "S2"]:
        out.append((f"sum.dim_IntList([2], keepdim) g={g}", lambda H, m, g=g: aten.sum.dim_IntList(H.dt(torch.randn(B, L, K), m, PL[g]), [2], True)))
        out.append((f"sum.dim_IntList([0], keepdim) (T,E) g={g}", lambda H, m, g=g: aten.sum.dim_IntList(H.dt(torch.randn(B * L, E), m, PL[g] if g != "S2" else [S(1)]), [0], True)))
    # mul / div / neg / add
    for g in ["R", "P", "S0"]:
        out.append((f"mul.Tensor(g={g}, 2.5)", lambda H, m, g=g: aten.mul.Tensor(H.dt(torch.randn(B, L, K), m, PL[g]), 2.5)))
        out.append((f"neg g={g}", lambda H, m, g=g: aten.neg(H.dt(torch.randn(B, L, K), m, PL[g]))))
        out.append((f"add.Tensor(g={g}, 1e-20)", lambda H, m, g=g: aten.add.Tensor(H.dt(torch.randn(B, L, K), m, PL[g]), 1e-20)))
    for a, b in [("P", "R"), ("R", "P"), ("P", "S0"), ("S0", "P"), ("P", "P"), ("S0", "R"), ("S1", "S0")]:
        out.append((f"mul.Tensor({a}, {b}) same shape", lambda H, m, a=a, b=b: aten.mul.Tensor(
            H.dt(torch.randn(B, L, K), m, PL[a]), H.dt(torch.randn(B, L, K), m, PL[b]))))
    for a, b in [("P", "R"), ("R", "P"), ("P", "S0"), ("S0", "S0"), ("P", "P"), ("S2", "R")]:
        out.append((f"div.Tensor({a} (B,L,K), {b} (B,L,1))", lambda H, m, a=a, b=b: aten.div.Tensor(
            H.dt(torch.randn(B, L, K), m, PL[a]), H.dt(torch.rand(B, L, 1) + 1, m, PL[b]))))
    for a, b in [("P", "P"), ("P", "R"), ("R", "P"), ("S0", "P"), ("P", "S0"), ("S0", "S1"), ("R", "S0"), ("S0", "S0")]:
        out.append((f"add.Tensor({a}, {b})", lambda H, m, a=a, b=b: aten.add.Tensor(
            H.dt(torch.randn(B, L, K), m, PL[a]), H.dt(torch.randn(B, L, K), m, PL[b]))))
    # t
    for g in ["R", "P", "S0", "S1"]:
        out.append((f"t g={g}", lambda H, m, g=g: aten.t(H.dt(torch.randn(T, E), m, PL[g]))))
    out.append(("t (1,E) S(0) [size-1 dim sharded]", lambda H, m: aten.t(H.dt(torch.randn(1, E), m, [S(1)]))))
    return out

def cases2d():
    def p(s):
        return [{"R": R, "P": P, "S0": S(0), "S1": S(1), "S2": S(2)}[x] for x in s.split(",")]
    out = []
    idx = torch.stack([torch.randperm(E)[:K] for _ in range(T)])
    for s, i, g in [("R,R", "R,R", "R,P"), ("R,R", "R,R", "P,P"), ("R,R", "S0,R", "S0,P"), ("R,R", "R,R", "P,R"),
                    ("R,R", "S0,S0", "S0,S0"), ("R,R", "R,S0", "R,S0")]:
        out.append((f"scatter_add(dim=-1) (T,E)=({T},{E}) self=[{s}] index=[{i}] src=[{g}]", lambda H, m, s=s, i=i, g=g: aten.scatter_add(
            H.dt(torch.zeros(T, E), m, p(s)), -1, H.dt(idx, m, p(i)), H.dt(torch.randn(T, K), m, p(g)))))
    idx3 = torch.stack([torch.randperm(E)[:K] for _ in range(B * L)]).reshape(B, L, K)
    for i, g in [("S0,R", "S0,P"), ("S0,S1", "S0,S1"), ("R,S1", "R,S1"), ("R,R", "R,P"), ("S0,R", "S0,R")]:
        out.append((f"scatter_add 3-D (B,L,E) self=[R,R] index=[{i}] src=[{g}]", lambda H, m, i=i, g=g: aten.scatter_add(
            H.dt(torch.zeros(B, L, E), m, [R, R]), -1, H.dt(idx3, m, p(i)), H.dt(torch.randn(B, L, K), m, p(g)))))
    for g, o in [("S0,P", "S0,R"), ("R,P", "R,R"), ("S0,S1", "S0,R"), ("R,S0", "R,R")]:
        out.append((f"sigmoid_backward g=[{g}] out=[{o}]", lambda H, m, g=g, o=o: aten.sigmoid_backward(
            H.dt(torch.randn(B, L, E), m, p(g)), H.dt(torch.rand(B, L, E), m, p(o)))))
        out.append((f"_softmax_backward_data g=[{g}] out=[{o}]", lambda H, m, g=g, o=o: aten._softmax_backward_data(
            H.dt(torch.randn(B, L, E), m, p(g)), H.dt(torch.softmax(torch.randn(B, L, E), -1), m, p(o)), -1, torch.float32)))
    for g in ["S0,P", "P,P", "R,S1"]:
        out.append((f"new_zeros (B,L,K)->(B,L,E) in=[{g}]", lambda H, m, g=g: aten.new_zeros(H.dt(torch.randn(B, L, K), m, p(g)), [B, L, E])))
        out.append((f"new_zeros same in=[{g}]", lambda H, m, g=g: aten.new_zeros(H.dt(torch.randn(B, L, K), m, p(g)), [B, L, K])))
    return out

def body(H):
    nd = 1 if H.world == 2 else 2
    m = H.mesh((2,) if nd == 1 else (2, 2))
    torch.manual_seed(0)
    sel = os.environ.get("SEL")
    for label, f in (cases1d() if nd == 1 else cases2d()):
        if sel and sel not in label:
            continue
        def fn(f=f):
            y = f(H, m)
            note(H, f"RESULT {gdesc(y) if not isinstance(y, tuple) else [gdesc(t) for t in y]}")
        run(H, f"mesh{tuple(m.shape)} {label}", fn, record_ops=None if os.environ.get("CANDS") else ())

main({2: body, 4: body})
