"""Q2: view ops of the node-limited router path.

(B,L,E)->(B,L,G,P) and back, unsqueeze(-1), flatten of the expert dim / of all dims, with the
input sharded on each dim; 1-D mesh (2,) and 2-D meshes (1,2), (2,2).
Run: python check_views.py
"""
from _common import *

SIZES = [(2, 4), (2, 5), (2, 1), (3, 4), (1, 4)]


def view_cases(H, m, pls, E=8, G=4, sizes=SIZES, tag=""):
    P_ = E // G
    for (B, L) in sizes:
        x = torch.arange(B * L * E, dtype=torch.float32).reshape(B, L, E)
        x4 = x.view(B, L, G, P_)
        for pl in pls:
            ps = [pstr(p) for p in pl]
            if all(not isinstance(p, Shard) or p.dim < 3 for p in pl):
                H.case(f"{tag} view(B,L,E)->(B,L,G,P) x={ps} B={B} L={L} E={E} G={G}",
                       lambda: H.dt(x, m, pl).view(B, L, G, P_), ref=lambda: x4, trace=True)
            H.case(f"{tag} view(B,L,G,P)->(B,L,E) x4={ps} B={B} L={L} E={E} G={G}",
                   lambda: H.dt(x4, m, pl).view(B, L, -1), ref=lambda: x, trace=True)
            H.case(f"{tag} flatten(2) (B,L,G,P)->(B,L,E) x4={ps} B={B} L={L} E={E} G={G}",
                   lambda: H.dt(x4, m, pl).flatten(2), ref=lambda: x, trace=True)


def misc_cases(H, m, pls, tag=""):
    for (B, L) in [(2, 4), (2, 5), (2, 1)]:
        E, K, G = 8, 3, 4
        x = torch.arange(B * L * E, dtype=torch.float32).reshape(B, L, E)
        g = torch.arange(B * L * G, dtype=torch.float32).reshape(B, L, G)
        ids = torch.arange(B * L * K).reshape(B, L, K) % E
        for pl in pls:
            ps = [pstr(p) for p in pl]
            H.case(f"{tag} unsqueeze(-1) (B,L,G) x={ps} B={B} L={L}",
                   lambda: H.dt(g, m, pl).unsqueeze(-1), ref=lambda: g.unsqueeze(-1), trace=True)
            H.case(f"{tag} view(-1) (B,L,E) x={ps} B={B} L={L}",
                   lambda: H.dt(x, m, pl).view(-1), ref=lambda: x.view(-1), trace=True)
            H.case(f"{tag} view(B*L,E) (B,L,E) x={ps} B={B} L={L}",
                   lambda: H.dt(x, m, pl).view(B * L, E), ref=lambda: x.view(B * L, E), trace=True)
            H.case(f"{tag} reshape(-1) ids(B,L,K) x={ps} B={B} L={L}",
                   lambda: H.dt(ids, m, pl).reshape(-1), ref=lambda: ids.reshape(-1), trace=True)


def world2(H):
    m = H.mesh((2,))
    pls = [[S(0)], [S(1)], [S(2)], [S(3)], [R]]
    view_cases(H, m, pls, tag="1D(2)")
    # G not divisible by the mesh size, and P sharded with odd G
    view_cases(H, m, [[S(2)], [S(3)]], E=6, G=3, sizes=[(2, 4)], tag="1D(2)")
    view_cases(H, m, [[S(2)], [S(3)]], E=12, G=3, sizes=[(2, 4)], tag="1D(2)")
    misc_cases(H, m, [[S(0)], [S(1)], [S(2)], [R]], tag="1D(2)")
    # _StridedShard round trip: (B,L,G,P) S(3) -> (B,L,E) -> (B,L,G,P)
    B, L, E, G = 2, 4, 8, 4
    x4 = torch.arange(B * L * E, dtype=torch.float32).reshape(B, L, G, E // G)
    H.case("1D(2) roundtrip x4=S(3) ->(B,L,E)->(B,L,G,P)",
           lambda: H.dt(x4, m, [S(3)]).view(B, L, E).view(B, L, G, E // G), ref=lambda: x4,
           trace=True)
    m12 = H.mesh((1, 2), ("dp_shard", "tp"))
    pls2 = [[R, S(1)], [S(0), S(1)], [R, S(2)], [S(1), S(1)]]
    view_cases(H, m12, pls2, sizes=[(2, 4), (2, 5), (2, 1)], tag="2D(1,2)")
    misc_cases(H, m12, pls2, tag="2D(1,2)")


def world4(H):
    m = H.mesh((2, 2), ("dp", "tp"))
    pls = [[R, S(1)], [S(0), S(1)], [S(1), S(2)], [S(1), S(1)], [S(0), S(0)]]
    view_cases(H, m, pls, sizes=[(2, 4), (2, 5), (4, 4)], tag="2D(2,2)")
    misc_cases(H, m, pls, tag="2D(2,2)")


if __name__ == "__main__":
    main({2: world2, 4: world4})
