"""Q11: local_map placement check (ValueError text), rank-dependent global shapes of an uneven
re-wrapped output, and what a later op does with such a DTensor (masked_fill broadcast error).
Meant for one gloo process per rank:  SHARDFUZZ_MODE=gloo python check_local_map.py
(in the default one-process LocalTensorMode run the rank-dependent cases fail differently).
"""
from _common import *
from torch.distributed.tensor.experimental import local_map

E, K, G, GK = 8, 3, 4, 2


def routing_map_local(s, i):
    return torch.zeros_like(s, dtype=torch.bool).scatter_(-1, i, True)


def group_mask_local(gs, gi):
    return torch.ones_like(gs, dtype=torch.bool).scatter_(-1, gi, False)


def world2(H):
    m = H.mesh((2,))
    torch.manual_seed(0)
    # small tensor so that the DTensor repr inside the ValueError stays short
    x = torch.arange(4, dtype=torch.float32).reshape(1, 2, 2)
    f = local_map(lambda t: t * 2, out_placements=[S(1)], in_placements=([R],), device_mesh=m)
    H.case("local_map in_placements [R] vs arg S(1) (list spec)", lambda: f(H.dt(x, m, [S(1)])))
    f2 = local_map(lambda t: t * 2, out_placements=(S(1),), in_placements=((R,),), device_mesh=m)
    H.case("local_map in_placements (R,) vs arg S(1) (tuple spec)", lambda: f2(H.dt(x, m, [S(1)])))
    f3 = local_map(lambda t: t * 2, out_placements=((R,),), in_placements=((R,),), device_mesh=m,
                   redistribute_inputs=True)
    H.case("local_map redistribute_inputs=True, arg S(1) -> (R,), out (R,)", lambda: f3(H.dt(x, m, [S(1)])),
           ref=lambda: x * 2)
    f4 = local_map(lambda t: t * 2, out_placements=(S(1),), in_placements=((R,), (R,)), device_mesh=m)
    H.case("local_map in_placements length 2 for 1 arg", lambda: f4(H.dt(x, m, [S(1)])))

    for L in (4, 5):
        B = 2
        torch.manual_seed(0)
        s = torch.randn(B, L, E)
        ids = torch.topk(s, K, dim=-1).indices
        ref_map = torch.zeros(B, L, E, dtype=torch.bool).scatter_(-1, ids, True)

        def run_map():
            sd, idd = H.dt(s, m, [S(1)]), H.dt(ids, m, [S(1)])
            fm = local_map(routing_map_local, in_placements=(sd.placements, idd.placements),
                           out_placements=(sd.placements,))
            return fm(sd, idd)
        H.case(f"local_map routing map S(1) L={L}", run_map, ref=lambda: ref_map, check=(L == 4))

        def run_counts():
            return run_map().sum(dim=(0, 1))
        H.case(f"local_map routing map S(1) L={L} then .sum(dim=(0,1))", run_counts,
               ref=lambda: ref_map.sum(dim=(0, 1)))

        gs = torch.randn(B, L, G)
        gidx = torch.topk(gs, GK, dim=-1, sorted=False).indices
        s4 = s.view(B, L, G, E // G).contiguous()
        ref_mask = torch.ones(B, L, G, dtype=torch.bool).scatter_(-1, gidx, False)
        ref_fill = s4.masked_fill(ref_mask.unsqueeze(-1), float("-inf"))

        def run_mask():
            gd, gid = H.dt(gs, m, [S(1)]), H.dt(gidx, m, [S(1)])
            fm = local_map(group_mask_local, in_placements=(gd.placements, gid.placements),
                           out_placements=(gd.placements,))
            return fm(gd, gid)
        H.case(f"local_map group_mask S(1) L={L}", run_mask, ref=lambda: ref_mask, check=(L == 4))

        def run_fill():
            mask = run_mask()
            return H.dt(s4, m, [S(1)]).masked_fill(mask.unsqueeze(-1), float("-inf"))
        H.case(f"local_map group_mask S(1) L={L} then scores4.masked_fill(mask.unsqueeze(-1),-inf)",
               run_fill, ref=lambda: ref_fill, check=(L == 4))

        def run_unsq():
            return run_mask().unsqueeze(-1)
        H.case(f"local_map group_mask S(1) L={L} then .unsqueeze(-1)", run_unsq,
               ref=lambda: ref_mask.unsqueeze(-1), check=(L == 4))


if __name__ == "__main__":
    main({2: world2})
