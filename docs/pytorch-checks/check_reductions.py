"""Q7, Q10: sum(dim=(0,1)) of the bool routing map, sum(-1, keepdim) of float (B,L,K),
argsort(stable=True) of flattened ids, cumsum of counts.
Run: python check_reductions.py
"""
from _common import *

E, K = 8, 3


def routing_map(B, L):
    torch.manual_seed(0)
    x = torch.randn(B, L, E)
    ids = torch.topk(x, K, dim=-1).indices
    return torch.zeros(B, L, E, dtype=torch.bool).scatter_(-1, ids, True), ids


def sum_cases(H, m, pls, sizes, tag):
    for (B, L) in sizes:
        rm, _ = routing_map(B, L)
        t = torch.rand(B, L, K)
        for pl in pls:
            ps = [pstr(p) for p in pl]
            H.case(f"{tag} bool.sum(dim=(0,1)) rm={ps} B={B} L={L}",
                   lambda: H.dt(rm, m, pl).sum(dim=(0, 1)), ref=lambda: rm.sum(dim=(0, 1)), trace=True)
            H.case(f"{tag} float.sum(-1,keepdim) t={ps} B={B} L={L}",
                   lambda: H.dt(t, m, pl).sum(dim=-1, keepdim=True),
                   ref=lambda: t.sum(dim=-1, keepdim=True), trace=True)


def world2(H):
    m = H.mesh((2,))
    sum_cases(H, m, [[S(0)], [S(1)], [S(2)], [R]], [(2, 4), (2, 5), (2, 1), (3, 4)], "1D(2)")
    t = torch.rand(2, 4, K)
    H.case("1D(2) float.sum(-1,keepdim) t=['P(sum)']",
           lambda: H.dt(t, m, [P]).sum(dim=-1, keepdim=True), ref=lambda: t.sum(-1, keepdim=True),
           trace=True)
    H.case("1D(2) float.sum(-1,keepdim) t=['P(max)']",
           lambda: H.dt(t, m, [Partial("max")]).sum(dim=-1, keepdim=True),
           ref=lambda: t.sum(-1, keepdim=True), trace=True)
    # argsort(stable) on flattened ids (N,)
    for (B, L) in [(2, 4), (2, 5)]:
        _, ids = routing_map(B, L)
        flat = ids.reshape(-1).contiguous()
        for pl in [[S(0)], [R]]:
            H.case(f"1D(2) argsort(stable) ids(N,) ids={[pstr(p) for p in pl]} N={flat.numel()}",
                   lambda: torch.argsort(H.dt(flat, m, pl), stable=True),
                   ref=lambda: torch.argsort(flat, stable=True), trace=True)
    # cumsum on counts (E,)
    counts = torch.tensor([3, 1, 0, 2, 5, 1, 0, 4])
    for pl in [[P], [R], [S(0)], [Partial("max")]]:
        H.case(f"1D(2) cumsum(counts,0) counts={[pstr(p) for p in pl]}",
               lambda: torch.cumsum(H.dt(counts, m, pl), 0), ref=lambda: torch.cumsum(counts, 0),
               trace=True)
        H.case(f"1D(2) cumsum(counts,0,dtype=int32) counts={[pstr(p) for p in pl]}",
               lambda: torch.cumsum(H.dt(counts, m, pl), 0, dtype=torch.int32),
               ref=lambda: torch.cumsum(counts, 0, dtype=torch.int32), trace=True)
    m12 = H.mesh((1, 2), ("dp_shard", "tp"))
    sum_cases(H, m12, [[R, S(1)], [S(0), S(1)], [R, R], [S(1), S(1)]], [(2, 4), (2, 5)], "2D(1,2)")


def world4(H):
    m = H.mesh((2, 2), ("dp", "tp"))
    sum_cases(H, m, [[R, S(1)], [S(0), S(1)], [S(1), S(1)], [S(0), S(0)], [S(0), R], [S(0), S(2)]],
              [(2, 4), (2, 5), (4, 4)], "2D(2,2)")


if __name__ == "__main__":
    main({2: world2, 4: world4})
