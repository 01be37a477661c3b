#!/usr/bin/env python3
"""DTensor gather: the _MaskPartial path indexes an empty local shard and raises on that rank.

scores (2, 3, 6) are Shard(2) over 4 ranks: torch.chunk gives the ranks 2, 2, 2 and 0 columns.
ids (2, 3, 1) are Replicate and have size 1 on the gathered dim, so DTensor picks gather's masked
strategy: the index becomes _MaskPartial, each rank rewrites the ids it does not own to 0 and
gathers locally. The rank that owns no column gathers index 0 from a dim of size 0.

Expected: scores.gather(-1, ids) equals the plain gather (a _MaskPartial result that reduces to it).
Prints REPRODUCED / NOT REPRODUCED; exit 0 when reproduced, 1 when not, 2 when it could not run.
One process: fake process group + LocalTensorMode (4 simulated ranks).
"""
import logging
import sys

import torch
import torch.distributed as dist

logging.disable(logging.WARNING)


def main():
    from torch.distributed._local_tensor import LocalTensorMode
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor
    from torch.testing._internal.distributed.fake_pg import FakeStore

    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=4)
    full = torch.arange(36, dtype=torch.float32).reshape(2, 3, 6)
    seen = []
    with LocalTensorMode(4):
        mesh = init_device_mesh("cpu", (4,))
        scores = distribute_tensor(full, mesh, [Shard(2)])
        for expert in (5, 0):  # an id rank 2 owns, an id rank 0 owns
            ids_full = torch.full((2, 3, 1), expert)
            ids = distribute_tensor(ids_full, mesh, [Replicate()])
            want = full.gather(-1, ids_full)
            try:
                got = scores.gather(-1, ids).full_tensor()
                seen.append((expert, "ok" if torch.equal(got, want) else f"wrong values {got.flatten().tolist()}"))
            except Exception as e:  # noqa: BLE001 (the point is which error)
                seen.append((expert, f"{type(e).__name__}: {str(e).splitlines()[0]}"))
    dist.destroy_process_group()
    for expert, what in seen:
        print(f"  gather of expert {expert}: {what}")
    bad = [w for _, w in seen if w != "ok"]
    if bad:
        return True, f"gather on a Shard(2) with an empty last shard fails: {bad[0]}"
    return False, "both gathers agree with the plain tensor"


if __name__ == "__main__":
    print(f"torch {torch.__version__}")
    try:
        reproduced, detail = main()
    except Exception as e:  # noqa: BLE001
        print(f"ERROR: could not run: {type(e).__name__}: {e}")
        sys.exit(2)
    print(("REPRODUCED: " if reproduced else "NOT REPRODUCED: ") + detail)
    sys.exit(0 if reproduced else 1)
