"""Q1 + Q13: the router gate F.linear(x_BLD, W_ED) (no bias) on DTensor.

Prints, per case, the condensed DebugMode trace (aten.t / aten.view (flatten to (B*L, D)) / aten.mm /
aten._unsafe_view, each with input placements -> output placements and any implicit input
redistribution), the final output, comm counts and whether full_tensor() equals the plain result.
Run: python check_gate_linear.py   (inside a venv with torch 2.12.1 or 2.13.0)
"""
import torch.nn.functional as F

from _common import *

D, E = 16, 8
SIZES = {"even": (2, 4), "L5": (2, 5), "B3": (3, 4), "L1": (2, 1), "B1": (1, 4)}


def gate_cases(H, m, xpls, wpls, sizes, tag):
    for sname in sizes:
        B, L = SIZES[sname] if isinstance(sname, str) else sname
        for xp in xpls:
            for wp in wpls:
                torch.manual_seed(0)
                x = torch.randn(B, L, D)
                W = torch.randn(E, D)
                lab = f"{tag} x={[pstr(p) for p in xp]} W={[pstr(p) for p in wp]} B={B} L={L}"
                H.case(lab, lambda: F.linear(H.dt(x, m, xp), H.dt(W, m, wp)),
                       ref=lambda: F.linear(x, W), trace=True)


def world2(H):
    m = H.mesh((2,))
    gate_cases(H, m, [[S(0)], [S(1)], [S(2)], [R]], [[R]], ["even", "L5", "B3", "L1", "B1"], "1D(2)")
    # gate weight sharded
    gate_cases(H, m, [[R], [S(1)], [S(0)]], [[S(0)], [S(1)]], ["even", "L5"], "1D(2) Wsharded")
    # W requires grad (nn.Parameter-like): matmul folds either way for contiguous x
    torch.manual_seed(0)
    x = torch.randn(2, 5, D)
    W = torch.randn(E, D)
    H.case("1D(2) x=[S(1)] W=[R] requires_grad B=2 L=5",
           lambda: F.linear(H.dt(x, m, [S(1)]), H.dt(W, m, [R], requires_grad=True)),
           ref=lambda: F.linear(x, W), trace=True)
    m12 = H.mesh((1, 2), ("dp_shard", "tp"))
    pls = [[R, S(1)], [S(0), S(1)], [S(1), S(1)], [S(0), S(0)], [R, S(0)], [R, R]]
    gate_cases(H, m12, pls, [[R, R]], ["even", "L5", "B3", "L1"], "2D(1,2)")


def world4(H):
    m = H.mesh((2, 2), ("dp", "tp"))
    pls = [[R, S(1)], [S(0), S(1)], [S(1), S(1)], [S(0), S(0)], [S(1), S(0)], [R, S(0)]]
    gate_cases(H, m, pls, [[R, R]], ["even", "L5", "B3", "L1", (4, 4), (2, 6), (4, 5), (2, 8)],
               "2D(2,2)")
    # gate weight sharded on tp, x token-sharded on tp (Q13 cost choice)
    gate_cases(H, m, [[S(0), S(1)], [S(0), R], [R, S(1)]], [[R, S(0)], [R, S(1)]], ["even"],
               "2D(2,2) Wsharded")


if __name__ == "__main__":
    main({2: world2, 4: world4})
