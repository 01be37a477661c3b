"""Q9: routing-map / group-mask scatter (in-place scatter_ and out-of-place scatter, value variant)
and masked_fill(mask.unsqueeze(-1), -inf) of the node-limited path.
Run: python check_scatter.py
"""
from _common import *

E, K, G, GK = 8, 3, 4, 2


def data(B, L):
    torch.manual_seed(0)
    x = torch.randn(B, L, E)
    ids = torch.topk(x, K, dim=-1).indices
    gs = torch.randn(B, L, G)
    gidx = torch.topk(gs, GK, dim=-1).indices
    return x, ids, gs, gidx


def scatter_cases(H, m, pairs, sizes, tag):
    for (B, L) in sizes:
        x, ids, gs, gidx = data(B, L)
        ref_map = torch.zeros(B, L, E, dtype=torch.bool).scatter_(-1, ids, True)
        ref_mask = torch.ones(B, L, G, dtype=torch.bool).scatter_(-1, gidx, False)
        for sp, ip in pairs:
            lab = f"s={[pstr(p) for p in sp]} idx={[pstr(p) for p in ip]} B={B} L={L}"
            H.case(f"{tag} zeros_like(s,bool).scatter_(-1,ids,True) {lab}",
                   lambda: torch.zeros_like(H.dt(x, m, sp), dtype=torch.bool).scatter_(-1, H.dt(ids, m, ip), True),
                   ref=lambda: ref_map, trace=True)
            H.case(f"{tag} zeros_like(s,bool).scatter(-1,ids,True) {lab}",
                   lambda: torch.zeros_like(H.dt(x, m, sp), dtype=torch.bool).scatter(-1, H.dt(ids, m, ip), True),
                   ref=lambda: ref_map, trace=True)
            H.case(f"{tag} ones_like(gs,bool).scatter_(-1,gidx,False) {lab}",
                   lambda: torch.ones_like(H.dt(gs, m, sp), dtype=torch.bool).scatter_(-1, H.dt(gidx, m, ip), False),
                   ref=lambda: ref_mask, trace=True)


def masked_fill_cases(H, m, pairs, sizes, tag):
    P_ = E // G
    for (B, L) in sizes:
        x, ids, gs, gidx = data(B, L)
        s4 = x.view(B, L, G, P_).contiguous()
        mask = torch.ones(B, L, G, dtype=torch.bool).scatter_(-1, gidx, False)
        ref = s4.masked_fill(mask.unsqueeze(-1), float("-inf"))
        for sp, mp in pairs:
            lab = f"scores4={[pstr(p) for p in sp]} mask={[pstr(p) for p in mp]} B={B} L={L}"
            H.case(f"{tag} scores4.masked_fill(mask.unsqueeze(-1),-inf) {lab}",
                   lambda: H.dt(s4, m, sp).masked_fill(H.dt(mask, m, mp).unsqueeze(-1), float("-inf")),
                   ref=lambda: ref, trace=True)
            H.case(f"{tag} scores4.masked_fill_(mask.unsqueeze(-1),-inf) {lab}",
                   lambda: H.dt(s4, m, sp).masked_fill_(H.dt(mask, m, mp).unsqueeze(-1), float("-inf")),
                   ref=lambda: ref, trace=True)


def world2(H):
    m = H.mesh((2,))
    pairs = [([S(0)], [S(0)]), ([S(1)], [S(1)]), ([R], [R]), ([S(1)], [R]), ([R], [S(1)]),
             ([S(0)], [S(1)]), ([S(2)], [S(2)]), ([S(2)], [R]), ([P], [R]), ([P], [S(1)])]
    scatter_cases(H, m, pairs, [(2, 4), (2, 5), (2, 1), (1, 4), (3, 4)], "1D(2)")
    # src variant (tensor src) for reference
    B, L = 2, 4
    x, ids, _, _ = data(B, L)
    src = torch.ones(B, L, K, dtype=torch.bool)
    ref = torch.zeros(B, L, E, dtype=torch.bool).scatter_(-1, ids, src)
    for pl in [[S(1)], [R]]:
        H.case(f"1D(2) zeros_like(s,bool).scatter_(-1,ids,src) all={[pstr(p) for p in pl]}",
               lambda: torch.zeros_like(H.dt(x, m, pl), dtype=torch.bool).scatter_(-1, H.dt(ids, m, pl), H.dt(src, m, pl)),
               ref=lambda: ref, trace=True)
    # self is a plain DTensor built directly (not via zeros_like)
    z = torch.zeros(B, L, E, dtype=torch.bool)
    H.case("1D(2) direct bool DTensor S(1) .scatter_(-1, ids S(1), True)",
           lambda: H.dt(z, m, [S(1)]).scatter_(-1, H.dt(ids, m, [S(1)]), True), ref=lambda: ref, trace=True)
    mpairs = [([S(1)], [S(1)]), ([S(0)], [S(0)]), ([R], [R]), ([S(1)], [R]), ([R], [S(1)]),
              ([S(2)], [S(2)]), ([S(3)], [R]), ([S(0)], [S(1)])]
    masked_fill_cases(H, m, mpairs, [(2, 4), (2, 5), (2, 1)], "1D(2)")
    m12 = H.mesh((1, 2), ("dp_shard", "tp"))
    pairs2 = [([R, S(1)], [R, S(1)]), ([S(0), S(1)], [S(0), S(1)]), ([R, R], [R, R]),
              ([R, S(1)], [R, R]), ([S(1), S(1)], [S(1), S(1)])]
    scatter_cases(H, m12, pairs2, [(2, 4), (2, 5), (2, 1)], "2D(1,2)")
    masked_fill_cases(H, m12, [([R, S(1)], [R, S(1)]), ([R, S(1)], [R, R])], [(2, 4), (2, 5)], "2D(1,2)")


def world4(H):
    m = H.mesh((2, 2), ("dp", "tp"))
    pairs = [([S(0), S(1)], [S(0), S(1)]), ([R, S(1)], [R, S(1)]), ([S(1), S(1)], [S(1), S(1)]),
             ([S(0), S(0)], [S(0), S(0)]), ([S(0), R], [S(0), R]), ([S(0), S(1)], [S(0), R])]
    scatter_cases(H, m, pairs, [(2, 4), (2, 5), (4, 4), (2, 2)], "2D(2,2)")
    masked_fill_cases(H, m, [([S(0), S(1)], [S(0), S(1)]), ([S(0), S(1)], [S(0), R])], [(2, 4), (2, 5)],
                      "2D(2,2)")


if __name__ == "__main__":
    main({2: world2, 4: world4})
