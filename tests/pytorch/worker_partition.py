"""The confirm worker lays out inputs as distribute_tensor does, Partial placements included.

Run by tests/realtorch.rs with the project's torch venv: PYTHONPATH=python python THIS.
Every rank's piece from `common.local_piece` must equal the local tensor real
`distribute_tensor` gives on a 2 x 3 mesh, for shards, Replicate and each Partial reduce op.
"""
import torch, torch.distributed as dist
from torch.distributed._local_tensor import LocalTensorMode
from torch.distributed.tensor import Partial, Replicate, Shard, distribute_tensor
from torch.distributed.device_mesh import init_device_mesh
from torch.testing._internal.distributed.fake_pg import FakeStore
from shardfuzz_worker import common
dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=6)
full = torch.randn(6, 5)
with LocalTensorMode(6):
    mesh = init_device_mesh("cpu", (2, 3))
    for pls in ([Partial("sum"), Shard(0)], [Shard(1), Partial("avg")], [Partial("max"), Partial("max")], [Partial("sum"), Partial("sum")], [Replicate(), Partial("min")]):
        d = distribute_tensor(full, mesh, pls)
        loc = d.to_local()
        real = loc._local_tensors if hasattr(loc, '_local_tensors') else {r: loc for r in range(6)}
        for r in range(6):
            mine = common.local_piece(full, [2, 3], pls, r)
            assert torch.equal(real[r], mine), (pls, r, real[r], mine)
print("local_piece matches distribute_tensor")
