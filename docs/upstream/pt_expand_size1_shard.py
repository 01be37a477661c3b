#!/usr/bin/env python3
"""DTensor expand of a size-1 dim that is sharded fails sharding propagation with a bare KeyError.

x (4, 1) is Shard(1) over 2 ranks (rank 0 holds the column, rank 1 an empty piece) and is expanded
to (4, 3). The view-op propagation looks the expanded dim up in a dict that has no entry for it,
and the KeyError surfaces as a RuntimeError whose message starts with the bare dim number ("1"),
followed by "Sharding propagation failed for aten.expand.default(...)".

Expected: either the input is replicated and the expand runs, or an error that says a sharded
size-1 dim cannot be expanded. Prints REPRODUCED / NOT REPRODUCED; exit 0 when reproduced (the
first line of the error is a bare number), 1 when not, 2 when it could not run.
One process: fake process group + LocalTensorMode (2 simulated ranks).
"""
import logging
import sys

import torch
import torch.distributed as dist

logging.disable(logging.WARNING)


def main():
    from torch.distributed._local_tensor import LocalTensorMode
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor
    from torch.testing._internal.distributed.fake_pg import FakeStore

    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=2)
    full = torch.arange(4, dtype=torch.float32).reshape(4, 1)
    with LocalTensorMode(2):
        mesh = init_device_mesh("cpu", (2,))
        x = distribute_tensor(full, mesh, [Shard(1)])
        try:
            out = x.expand(4, 3)
            what = f"ok: {out.placements[0]}, {out.full_tensor().tolist()}"
            first = None
        except Exception as e:  # noqa: BLE001 (the point is which error)
            first = str(e).splitlines()[0] if str(e) else ""
            what = f"{type(e).__name__}: {str(e)!r}"
    dist.destroy_process_group()
    print(f"  expand(4, 3) of a (4, 1) Shard(1): {what}")
    if first is not None and first.strip().isdigit():
        return True, f"expand raises with the bare message {first.strip()!r}"
    return False, "expand runs or raises a descriptive error"


if __name__ == "__main__":
    print(f"torch {torch.__version__}")
    try:
        reproduced, detail = main()
    except Exception as e:  # noqa: BLE001
        print(f"ERROR: could not run: {type(e).__name__}: {e}")
        sys.exit(2)
    print(("REPRODUCED: " if reproduced else "NOT REPRODUCED: ") + detail)
    sys.exit(0 if reproduced else 1)
