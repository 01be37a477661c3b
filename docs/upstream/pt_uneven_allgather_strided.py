#!/usr/bin/env python3
"""DTensor all_gather of an uneven Shard(d), d > 0, returns a non-contiguous local tensor, and a
later view of it raises.

x (2, 3) is Shard(1) over 2 ranks (2 and 1 columns). Redistributing to Replicate pads every piece,
all-gathers on dim 0, and narrows the padding away; for d > 0 that leaves the local tensor strided,
so a plain `.view(-1)` on it (as model code does after a gather) raises "view size is not
compatible with input tensor's size and stride". Seen in 2.12.1; 2.13.0 returns it contiguous.

Expected: the replicated tensor can be viewed like the plain one.
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
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor
    from torch.testing._internal.distributed.fake_pg import FakeStore

    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=2)
    full = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    with LocalTensorMode(2):
        mesh = init_device_mesh("cpu", (2,))
        rep = distribute_tensor(full, mesh, [Shard(1)]).redistribute(mesh, [Replicate()])
        local = rep.to_local()
        contiguous = bool(local.is_contiguous())
        try:
            local.view(-1)
            what = "view ok"
        except Exception as e:  # noqa: BLE001
            what = f"{type(e).__name__}: {str(e).splitlines()[0]}"
    dist.destroy_process_group()
    print(f"  Shard(1) -> Replicate local tensor contiguous: {contiguous}; .view(-1): {what}")
    if not contiguous or what != "view ok":
        return True, f"the gathered local tensor is not contiguous ({what})"
    return False, "the gathered local tensor is contiguous"


if __name__ == "__main__":
    print(f"torch {torch.__version__}")
    try:
        reproduced, detail = main()
    except Exception as e:  # noqa: BLE001
        print(f"ERROR: could not run: {type(e).__name__}: {e}")
        sys.exit(2)
    print(("REPRODUCED: " if reproduced else "NOT REPRODUCED: ") + detail)
    sys.exit(0 if reproduced else 1)
