"""Redistribute-cost probe: for (src, dst) placement pairs print redistribute_cost, the planner's
transform steps (mesh_dim, src->dst, logical shape) and shard_order of both specs."""
import sys, os
sys.path.insert(0, os.path.dirname(__file__))
from probe import *
from torch.distributed.tensor.placement_types import _StridedShard
from torch.distributed.tensor._dtensor_spec import DTensorSpec, TensorMeta
from torch.distributed.tensor._collective_utils import redistribute_cost, MeshTopoInfo
from torch.distributed.tensor._redistribute import _gen_transform_infos

def spec(m, pls, shape, use=None):
    t = torch.empty(shape)
    kw = {}
    if any(isinstance(p, _StridedShard) for p in pls) and os.environ.get("STRIDED_FLAG") is not None:
        kw["use_strided_shard_as_shard_order"] = os.environ["STRIDED_FLAG"] == "1"
    return DTensorSpec(m, tuple(pls), tensor_meta=TensorMeta(torch.Size(shape), t.stride(), torch.float32), **kw)

def body(H):
    m = H.mesh((2, 2))
    topo = MeshTopoInfo.build_from_mesh(m)
    H.print(f"MeshTopoInfo: devices={topo.mesh_dim_devices} bw={topo.mesh_dim_bandwidth} lat={topo.mesh_dim_latency}")
    SS = lambda d, sf: _StridedShard(d, split_factor=sf)
    pairs = [
        ((8, 4), [SS(0, 2), S(1)], [S(0), R]),
        ((8, 4), [SS(0, 2), S(1)], [SS(0, 2), R]),
        ((8, 4), [SS(0, 2), S(1)], [R, R]),
        ((8, 4), [SS(0, 2), S(1)], [R, S(1)]),
        ((8, 4), [SS(0, 2), S(1)], [S(0), S(1)]),
        ((8, 4), [SS(0, 2), S(1)], [SS(0, 2), S(0)]),
        ((8, 4), [SS(0, 2), R], [S(0), R]),
        ((8, 4), [SS(0, 2), R], [R, R]),
        ((4, 4), [R, S(1)], [R, S(0)]),
        ((2, 2, 4), [S(2), R], [R, R]),
        ((2, 2, 4), [S(2), R], [R, S(0)]),
        ((2, 2, 4), [S(2), R], [S(0), R]),
        ((2, 2, 4), [S(2), R], [S(0), S(1)]),
        ((2, 4, 8), [R, P], [S(0), S(1)]),
        ((2, 4, 8), [R, P], [R, S(0)]),
        ((2, 4, 8), [R, P], [R, R]),
        ((4, 8), [R, P], [S(0), S(0)]),
        ((4, 8), [R, P], [R, S(0)]),
    ]
    for shape, a, b in pairs:
        sa, sb = spec(m, a, shape), spec(m, b, shape)
        try:
            c = round(redistribute_cost(sa, sb), 4)
        except Exception as e:
            c = f"EXC {type(e).__name__}: {e}"
        try:
            steps = [(ti.mesh_dim, pl(ti.src_dst_placements[:1]) + "->" + pl(ti.src_dst_placements[1:]), list(ti.logical_shape)) for ti in _gen_transform_infos(sa, sb)]
        except Exception as e:
            steps = f"EXC {type(e).__name__}: {e}"
        H.print(f"{shape} {pl(a)} -> {pl(b)}: cost={c}  shard_order src={sa.shard_order} dst={sb.shard_order}\n     steps={steps}")

main({4: body})
