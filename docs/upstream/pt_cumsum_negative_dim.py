#!/usr/bin/env python3
"""DTensor cumsum with a negative dim keeps a shard on the scanned dim and sums each shard alone.

x (2, 4) is Shard(1) over 2 ranks. x.cumsum(-1) scans the sharded dim, so the input must be
replicated first. In 2.12/2.13 `scan_strategy` compares the shard dim with the dim as passed (-1)
instead of the normalized dim (1), keeps Shard(1), and every rank returns the running sum of its
own columns only: wrong values, no error. (2.14 re-registered cumsum as a single-dim strategy,
which normalizes the dim.)

Expected: x.cumsum(-1).full_tensor() equals the plain cumsum.
Prints REPRODUCED / NOT REPRODUCED; exit 0 when reproduced, 1 when not, 2 when it could not run.
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
    full = torch.arange(8, dtype=torch.float32).reshape(2, 4)
    want = full.cumsum(-1)
    with LocalTensorMode(2):
        mesh = init_device_mesh("cpu", (2,))
        out = distribute_tensor(full, mesh, [Shard(1)]).cumsum(-1)
        placement = out.placements[0]
        got = out.full_tensor()
    dist.destroy_process_group()
    print(f"  cumsum(-1) of Shard(1): placement {placement}, values {got.tolist()}")
    print(f"  plain cumsum(-1):                   {want.tolist()}")
    if not torch.equal(got, want):
        return True, f"cumsum(-1) on Shard(1) returns {placement} with per-shard running sums"
    return False, "cumsum(-1) on Shard(1) is right"


if __name__ == "__main__":
    print(f"torch {torch.__version__}")
    try:
        reproduced, detail = main()
    except Exception as e:  # noqa: BLE001
        print(f"ERROR: could not run: {type(e).__name__}: {e}")
        sys.exit(2)
    print(("REPRODUCED: " if reproduced else "NOT REPRODUCED: ") + detail)
    sys.exit(0 if reproduced else 1)
