"""Q12 (+Q13 extras): redistribute error texts and uneven reduce_scatter; from_local without shape
on uneven locals; distribute_tensor errors; the mm strategy choice on a 2-D mesh.
Run: python check_redistribute.py
"""
import torch.nn.functional as F

from _common import *
from torch.distributed.tensor import distribute_tensor


def world2(H):
    m = H.mesh((2,))
    x = torch.arange(10, dtype=torch.float32).reshape(5, 2)
    H.case("S(0)->P(sum) redistribute", lambda: H.dt(x, m, [S(0)]).redistribute(m, [P]))
    H.case("R->P(sum) redistribute", lambda: H.dt(x, m, [R]).redistribute(m, [P]))
    H.case("P(sum)->P(max) redistribute", lambda: H.dt(x, m, [P]).redistribute(m, [Partial("max")]))
    H.case("P(sum)->P(sum) redistribute (same)", lambda: H.dt(x, m, [P]).redistribute(m, [P]),
           ref=lambda: x)
    H.case("P(max)->R", lambda: H.dt(x, m, [Partial("max")]).redistribute(m, [R]), ref=lambda: x,
           trace=True)
    H.case("P(sum)->S(0) uneven 5 rows (reduce_scatter)",
           lambda: H.dt(x, m, [P]).redistribute(m, [S(0)]), ref=lambda: x, trace=True)
    H.case("P(sum)->S(1) even", lambda: H.dt(x, m, [P]).redistribute(m, [S(1)]), ref=lambda: x, trace=True)
    x1 = torch.arange(3, dtype=torch.float32)
    H.case("P(sum)->S(0) size 3 over 2", lambda: H.dt(x1, m, [P]).redistribute(m, [S(0)]),
           ref=lambda: x1, trace=True)
    x0 = torch.arange(1, dtype=torch.float32)
    H.case("P(sum)->S(0) size 1 over 2 (rank1 empty)", lambda: H.dt(x0, m, [P]).redistribute(m, [S(0)]),
           ref=lambda: x0, trace=True)
    H.case("S(0)->S(1) uneven 5x2 (all_to_all)", lambda: H.dt(x, m, [S(0)]).redistribute(m, [S(1)]),
           ref=lambda: x, trace=True)
    H.case("S(0)->R uneven 5 rows", lambda: H.dt(x, m, [S(0)]).redistribute(m, [R]), ref=lambda: x,
           trace=True)
    H.case("R->S(0) uneven 5 rows", lambda: H.dt(x, m, [R]).redistribute(m, [S(0)]), ref=lambda: x,
           trace=True)
    H.case("redistribute(placements=None)", lambda: H.dt(x, m, [S(0)]).redistribute(m, None))
    H.case("distribute_tensor Partial", lambda: distribute_tensor(x, m, [P]))
    H.case("distribute_tensor wrong length",
           lambda: distribute_tensor(x, m, [S(0), R]))

    # from_local without shape= on uneven locals (5 rows: 3 + 2)
    def fl():
        from torch.distributed.tensor import DTensor
        if H.gloo:
            loc = torch.ones(3 if H.rank == 0 else 2, 2)
        else:
            loc = LocalTensor({0: torch.ones(3, 2), 1: torch.ones(2, 2)})
        return DTensor.from_local(loc, m, [S(0)], run_check=False)
    H.case("from_local S(0) locals 3+2 rows, no shape=", fl)

    m12 = H.mesh((1, 2), ("dp_shard", "tp"))
    H.case("2D(1,2) (R,S(1))->(R,P) redistribute",
           lambda: H.dt(torch.ones(2, 4, 8), m12, [R, S(1)]).redistribute(m12, [R, P]))
    H.case("2D(1,2) (R,R)->(P,R) redistribute",
           lambda: H.dt(torch.ones(2, 4, 8), m12, [R, R]).redistribute(m12, [P, R]))


def world4(H):
    m = H.mesh((2, 2), ("dp", "tp"))
    torch.manual_seed(0)
    a = torch.randn(8, 16)
    w = torch.randn(16, 8)
    # Q13: mm strategy choice with lhs sharded on rows vs contraction dim, rhs replicated
    for ap in [[S(0), S(1)], [S(1), S(0)], [S(0), S(0)], [S(1), S(1)], [R, S(1)], [S(1), R], [P, S(1)]]:
        for wp in [[R, R], [R, S(0)], [R, S(1)]]:
            H.case(f"2D(2,2) mm a={[pstr(p) for p in ap]} w={[pstr(p) for p in wp]}",
                   lambda: torch.mm(H.dt(a, m, ap), H.dt(w, m, wp)), ref=lambda: a @ w, trace=True)
    x = torch.arange(40, dtype=torch.float32).reshape(5, 8)
    H.case("2D(2,2) (P,P)->(S(0),S(0)) 5 rows", lambda: H.dt(x, m, [P, P]).redistribute(m, [S(0), S(0)]),
           ref=lambda: x, trace=True)
    H.case("2D(2,2) (S(0),S(0))->(R,S(0)) 5 rows",
           lambda: H.dt(x, m, [S(0), S(0)]).redistribute(m, [R, S(0)]), ref=lambda: x, trace=True)


if __name__ == "__main__":
    main({2: world2, 4: world4})
