#!/usr/bin/env python3
"""DTensor gather: a _MaskPartial result can be reduced only once; the second use is a bare AssertionError.

scores (1, 2, 4) are Shard(2) over 2 ranks and ids (1, 2, 1) Replicate, so scores.gather(-1, ids)
returns a _MaskPartial DTensor. Its first reduction applies the mask and releases the placement's
mask buffer; any later op that reduces the same DTensor again finds no mask and fails with
`AssertionError` (empty message). Two forms are tried: full_tensor() twice, and the route-norm
pattern of an MoE router with top_k = 1, `ts / (ts.sum(-1, keepdim=True) + 1e-20)`.

Expected: both give the plain tensor's values.
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
    full = torch.tensor([[[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]]])
    ids_full = torch.tensor([[[3], [0]]])
    want = full.gather(-1, ids_full)
    results = {}
    with LocalTensorMode(2):
        mesh = init_device_mesh("cpu", (2,))
        scores = distribute_tensor(full, mesh, [Shard(2)])
        ids = distribute_tensor(ids_full, mesh, [Replicate()])

        def attempt(name, fn, expected):
            try:
                got = fn()
                ok = torch.allclose(got, expected)
                results[name] = "ok" if ok else f"wrong values {got.flatten().tolist()}"
            except Exception as e:  # noqa: BLE001 (the point is which error)
                results[name] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else '(empty message)'}"

        ts = scores.gather(-1, ids)
        print(f"  gather output placement: {ts.placements[0]}")
        first = ts.full_tensor()
        print(f"  first full_tensor(): {first.flatten().tolist()} (want {want.flatten().tolist()})")
        attempt("second full_tensor()", lambda: ts.full_tensor(), want)
        ts = scores.gather(-1, ids)
        attempt("ts / (ts.sum(-1, keepdim=True) + 1e-20)",
                lambda: (ts / (ts.sum(-1, keepdim=True) + 1e-20)).full_tensor(),
                want / (want.sum(-1, keepdim=True) + 1e-20))
    dist.destroy_process_group()
    for k, v in results.items():
        print(f"  {k}: {v}")
    bad = {k: v for k, v in results.items() if v != "ok"}
    if bad:
        k, v = next(iter(bad.items()))
        return True, f"reducing the _MaskPartial gather result again fails ({k}: {v})"
    return False, "the gather result can be reduced more than once"


if __name__ == "__main__":
    print(f"torch {torch.__version__}")
    try:
        reproduced, detail = main()
    except Exception as e:  # noqa: BLE001
        print(f"ERROR: could not run: {type(e).__name__}: {e}")
        sys.exit(2)
    print(("REPRODUCED: " if reproduced else "NOT REPRODUCED: ") + detail)
    sys.exit(0 if reproduced else 1)
