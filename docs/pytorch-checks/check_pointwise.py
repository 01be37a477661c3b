"""Q3, Q4, Q8: softmax / sigmoid, bias add with broadcasting, scalar mul/div, route_norm division,
zeros_like / ones_like, with Shard / Replicate / Partial inputs.
Run: python check_pointwise.py
"""
from _common import *

B, L, E, K = 2, 4, 8, 3


def inputs(L_=L):
    torch.manual_seed(0)
    x = torch.randn(B, L_, E)
    bias = torch.randn(E) * 0.1
    t = torch.rand(B, L_, K) + 0.1
    return x, bias, t


def softmax_sigmoid(H, m, pls, tag, L_=L):
    x, _, _ = inputs(L_)
    for pl in pls:
        ps = [pstr(p) for p in pl]
        H.case(f"{tag} softmax(-1) x={ps} L={L_}", lambda: torch.softmax(H.dt(x, m, pl), dim=-1),
               ref=lambda: torch.softmax(x, dim=-1), trace=True)
        H.case(f"{tag} sigmoid x={ps} L={L_}", lambda: torch.sigmoid(H.dt(x, m, pl)),
               ref=lambda: torch.sigmoid(x), trace=True)


def bias_add(H, m, xpls, bpls, tag, L_=L):
    x, bias, _ = inputs(L_)
    for xp in xpls:
        for bp in bpls:
            H.case(f"{tag} x+bias x={[pstr(p) for p in xp]} bias={[pstr(p) for p in bp]} L={L_}",
                   lambda: H.dt(x, m, xp) + H.dt(bias, m, bp), ref=lambda: x + bias, trace=True)


def scalars(H, m, pls, tag):
    _, _, t = inputs()
    for pl in pls:
        ps = [pstr(p) for p in pl]
        H.case(f"{tag} t*2.5 t={ps}", lambda: H.dt(t, m, pl) * 2.5, ref=lambda: t * 2.5, trace=True)
        H.case(f"{tag} t/2.5 t={ps}", lambda: H.dt(t, m, pl) / 2.5, ref=lambda: t / 2.5, trace=True)
        H.case(f"{tag} t+1e-20 t={ps}", lambda: H.dt(t, m, pl) + 1e-20, ref=lambda: t + 1e-20,
               trace=True)
        # the route_norm chain: t / (t.sum(-1, keepdim=True) + 1e-20)
        def norm(pl=pl):
            d = H.dt(t, m, pl)
            return d / (d.sum(dim=-1, keepdim=True) + 1e-20)
        H.case(f"{tag} route_norm t/(t.sum(-1,keepdim)+eps) t={ps}", norm,
               ref=lambda: t / (t.sum(dim=-1, keepdim=True) + 1e-20), trace=True)


def div_pairs(H, m, pairs, tag):
    _, _, t = inputs()
    den = t.sum(dim=-1, keepdim=True)
    for tp, dp in pairs:
        H.case(f"{tag} t/den (B,L,K)/(B,L,1) t={[pstr(p) for p in tp]} den={[pstr(p) for p in dp]}",
               lambda: H.dt(t, m, tp) / H.dt(den, m, dp), ref=lambda: t / den, trace=True)
        H.case(f"{tag} t*den (B,L,K)*(B,L,1) t={[pstr(p) for p in tp]} den={[pstr(p) for p in dp]}",
               lambda: H.dt(t, m, tp) * H.dt(den, m, dp), ref=lambda: t * den, trace=True)


def likes(H, m, pls, tag):
    x, _, _ = inputs()
    for pl in pls:
        ps = [pstr(p) for p in pl]
        H.case(f"{tag} zeros_like(bool) x={ps}", lambda: torch.zeros_like(H.dt(x, m, pl), dtype=torch.bool),
               ref=lambda: torch.zeros_like(x, dtype=torch.bool), trace=True)
        H.case(f"{tag} ones_like(bool) x={ps}", lambda: torch.ones_like(H.dt(x, m, pl), dtype=torch.bool),
               ref=lambda: torch.ones_like(x, dtype=torch.bool), trace=True)
        H.case(f"{tag} zeros_like x={ps}", lambda: torch.zeros_like(H.dt(x, m, pl)),
               ref=lambda: torch.zeros_like(x), trace=True)


def world2(H):
    m = H.mesh((2,))
    pls = [[S(0)], [S(1)], [S(2)], [R], [P], [Partial("max")]]
    softmax_sigmoid(H, m, pls, "1D(2)")
    softmax_sigmoid(H, m, [[S(1)], [S(2)]], "1D(2)", L_=5)
    softmax_sigmoid(H, m, [[S(1)]], "1D(2)", L_=1)
    bias_add(H, m, [[S(0)], [S(1)], [S(2)], [R], [P]], [[R], [S(0)], [P]], "1D(2)")
    bias_add(H, m, [[S(1)]], [[R], [S(0)]], "1D(2)", L_=5)
    scalars(H, m, [[S(0)], [S(1)], [S(2)], [R], [P], [Partial("max")]], "1D(2)")
    div_pairs(H, m, [([S(1)], [S(1)]), ([S(1)], [R]), ([R], [S(1)]), ([S(2)], [R]),
                     ([P], [R]), ([R], [P]), ([P], [P]), ([S(1)], [P]), ([P], [S(1)]),
                     ([S(0)], [S(1)])], "1D(2)")
    likes(H, m, [[S(0)], [S(1)], [S(2)], [R], [P], [Partial("max")]], "1D(2)")
    m12 = H.mesh((1, 2), ("dp_shard", "tp"))
    softmax_sigmoid(H, m12, [[R, S(1)], [R, S(2)], [S(0), P]], "2D(1,2)")
    bias_add(H, m12, [[R, S(1)], [S(0), S(1)], [R, P]], [[R, R]], "2D(1,2)")
    likes(H, m12, [[R, S(1)], [R, P], [P, S(1)]], "2D(1,2)")


def world4(H):
    m = H.mesh((2, 2), ("dp", "tp"))
    softmax_sigmoid(H, m, [[S(0), S(1)], [S(0), S(2)], [S(1), S(1)], [P, S(1)]], "2D(2,2)")
    bias_add(H, m, [[S(0), S(1)], [S(0), S(2)], [P, S(1)]], [[R, R], [R, S(0)]], "2D(2,2)")
    likes(H, m, [[S(0), S(1)], [P, S(1)], [S(1), S(1)]], "2D(2,2)")


if __name__ == "__main__":
    main({2: world2, 4: world4})
