"""Q5, Q6: topk (sorted=False / default), the shardability filter, gather with DTensor and plain
int64 index, and the topk cache-key issue (k not in the cache key).
Run: python check_topk_gather.py
"""
from _common import *

E, K = 8, 3


def data(B, L, seed=0):
    torch.manual_seed(seed)
    x = torch.randn(B, L, E)
    return x


def topk_cases(H, m, pls, sizes, tag):
    for (B, L) in sizes:
        x = data(B, L)
        ref_i = torch.topk(x, K, dim=-1, sorted=False)
        for pl in pls:
            ps = [pstr(p) for p in pl]
            # values and indices; compare sets via sort since order is unspecified for sorted=False
            def run(pl=pl):
                v, i = torch.topk(H.dt(x, m, pl), K, dim=-1, sorted=False)
                return (v, i)
            H.case(f"{tag} topk(K={K},-1,sorted=False) x={ps} B={B} L={L}", run,
                   ref=lambda: tuple(ref_i), trace=True)
            H.case(f"{tag} topk(2,-1) sorted x={ps} B={B} L={L}",
                   lambda: tuple(torch.topk(H.dt(x, m, pl), 2, dim=-1)),
                   ref=lambda: tuple(torch.topk(x, 2, dim=-1)), trace=True)


def gather_cases(H, m, pairs, sizes, tag):
    for (B, L) in sizes:
        x = data(B, L)
        ids = torch.topk(x, K, dim=-1).indices
        for sp, ip in pairs:
            H.case(f"{tag} gather(s,-1,ids) s={[pstr(p) for p in sp]} ids={[pstr(p) for p in ip]} B={B} L={L}",
                   lambda: H.dt(x, m, sp).gather(-1, H.dt(ids, m, ip)),
                   ref=lambda: x.gather(-1, ids), trace=True)


def world2(H):
    m = H.mesh((2,))
    pls = [[S(0)], [S(1)], [S(2)], [R], [P]]
    topk_cases(H, m, pls, [(2, 4), (2, 5), (2, 1), (1, 4)], "1D(2)")
    gather_cases(H, m, [([S(1)], [S(1)]), ([S(0)], [S(0)]), ([R], [R]), ([S(1)], [R]),
                        ([R], [S(1)]), ([S(0)], [S(1)]), ([S(2)], [S(1)]), ([S(2)], [R]),
                        ([P], [R]), ([P], [S(1)])], [(2, 4), (2, 5), (2, 1)], "1D(2)")
    # plain int64 index (force-balance path)
    B, L = 2, 4
    x = data(B, L)
    ids = torch.arange(B * L * K).reshape(B, L, K) % E
    for pl in [[S(1)], [R]]:
        H.case(f"1D(2) gather plain-int64-index s={[pstr(p) for p in pl]}",
               lambda: H.dt(x, m, pl).gather(dim=-1, index=ids), ref=lambda: x.gather(-1, ids))
    one = torch.zeros(B, L, 1, dtype=torch.int64)
    H.case("1D(2) gather plain index numel>1 shape (B,L,1) s=['S(1)']",
           lambda: H.dt(x, m, [S(1)]).gather(-1, one), ref=lambda: x.gather(-1, one))
    H.case("1D(2) topk plain tensor + DTensor mixed add",
           lambda: H.dt(x, m, [S(1)]) + torch.ones(E), ref=lambda: x + torch.ones(E))

    # cache key: topk with k=3 then k=2 on the same layout, cache NOT cleared in between
    def cache_probe():
        xd = H.dt(x, m, [S(1)])
        a = torch.topk(xd, 3, dim=-1, sorted=False)
        b = torch.topk(xd, 2, dim=-1, sorted=False)
        return (a.values, b.values, b.indices)
    H.case("1D(2) topk k=3 then k=2 same layout (cache kept)", cache_probe,
           ref=lambda: (torch.topk(x, 3, -1, sorted=False).values,
                        torch.topk(x, 2, -1, sorted=False).values,
                        torch.topk(x, 2, -1, sorted=False).indices))
    m12 = H.mesh((1, 2), ("dp_shard", "tp"))
    topk_cases(H, m12, [[R, S(1)], [S(0), S(1)], [R, S(2)]], [(2, 4), (2, 1)], "2D(1,2)")
    gather_cases(H, m12, [([R, S(1)], [R, S(1)]), ([R, S(1)], [R, R]), ([S(0), S(1)], [S(0), S(1)])],
                 [(2, 4)], "2D(1,2)")


def world4(H):
    m = H.mesh((2, 2), ("dp", "tp"))
    topk_cases(H, m, [[S(0), S(1)], [S(1), S(1)], [S(0), S(0)], [R, S(2)]], [(2, 4), (2, 5), (2, 2)],
               "2D(2,2)")
    gather_cases(H, m, [([S(0), S(1)], [S(0), S(1)]), ([S(1), S(1)], [S(1), S(1)]),
                        ([S(0), S(1)], [S(0), R])], [(2, 4), (2, 5)], "2D(2,2)")


if __name__ == "__main__":
    main({2: world2, 4: world4})
