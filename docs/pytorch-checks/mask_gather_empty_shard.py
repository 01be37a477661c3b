#!/usr/bin/env python3
"""A gather along a dim that torch.chunk shards with an empty last shard, with a size-1 index.

Scores (2, 3, 6) Shard(2) over 4 ranks hold 2, 2, 2 and 0 experts. The index has size 1 on the
gathered dim, so DTensor picks its masked-partial strategy: every rank masks the ids it does not
own to 0 and gathers locally, and the rank with no experts cannot gather index 0.

    python mask_gather_empty_shard.py     # with torch 2.12.1, 2.13.0 or 2.14.0

Seen on all three: `RuntimeError index 0 is out of bounds for dimension 2 with size 0`, twice
(an owned id, 5, and an id no rank but the first owns, 0).
"""
import torch
import torch.distributed as dist
from torch.distributed._local_tensor import LocalTensorMode
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Replicate, Shard, distribute_tensor
from torch.testing._internal.distributed.fake_pg import FakeStore

dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=4)
with LocalTensorMode(4):
    mesh = init_device_mesh("cpu", (4,))
    scores = distribute_tensor(torch.arange(36, dtype=torch.float32).reshape(2, 3, 6), mesh, [Shard(2)])
    for fill in (5, 0):
        ids = distribute_tensor(torch.full((2, 3, 1), fill), mesh, [Replicate()])
        try:
            out = scores.gather(-1, ids)
            print("ok", out.placements, out.full_tensor().flatten().tolist())
        except Exception as e:  # noqa: BLE001 (the point is which error)
            print(type(e).__name__, e)
