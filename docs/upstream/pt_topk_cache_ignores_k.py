#!/usr/bin/env python3
"""DTensor topk: the sharding-propagation cache key leaves out k, so a second topk with another k
on the same input layout gets the first call's output shape.

x (2, 4, 6) is Shard(1) over 2 ranks. x.topk(3, -1) then x.topk(2, -1): topk is registered with
RuntimeSchemaInfo(2), which hashes the arguments from index 2 (dim, largest, sorted) but not k
(index 1), so the second call hits the first call's cached output spec. Its DTensor claims a
global shape (2, 4, 3) while every rank's local tensor is (2, 2, 2); full_tensor() then fails or
returns a wrongly shaped tensor.

Expected: the second result has global shape (2, 4, 2).
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
    torch.manual_seed(0)
    full = torch.randn(2, 4, 6)
    with LocalTensorMode(2):
        mesh = init_device_mesh("cpu", (2,))
        x = distribute_tensor(full, mesh, [Shard(1)])
        first = x.topk(3, dim=-1)
        second = x.topk(2, dim=-1)
        shape = tuple(second.values.shape)
        local = tuple(second.values.to_local().shape)
        try:
            whole = tuple(second.values.full_tensor().shape)
        except Exception as e:  # noqa: BLE001
            whole = f"{type(e).__name__}: {str(e).splitlines()[0]}"
    dist.destroy_process_group()
    print(f"  first  topk(3): global {tuple(first.values.shape)}")
    print(f"  second topk(2): global {shape}, local {local}, full_tensor() -> {whole}")
    if shape != (2, 4, 2):
        return True, f"topk(2) after topk(3) on the same layout reports global shape {shape}, not (2, 4, 2)"
    return False, "the second topk has the right global shape"


if __name__ == "__main__":
    print(f"torch {torch.__version__}")
    try:
        reproduced, detail = main()
    except Exception as e:  # noqa: BLE001
        print(f"ERROR: could not run: {type(e).__name__}: {e}")
        sys.exit(2)
    print(("REPRODUCED: " if reproduced else "NOT REPRODUCED: ") + detail)
    sys.exit(0 if reproduced else 1)
