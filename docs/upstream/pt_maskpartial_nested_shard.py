#!/usr/bin/env python3
"""DTensor gather on a dim sharded over two mesh dims: wrong values, out-of-bounds errors, or
"MaskBuffer has been materialized with conflicting data", differing from rank to rank.

scores (1, 1, 8) are [Shard(2), Shard(2)] on a 2x2 mesh (each rank holds 2 of the 8 columns) and
ids (1, 1, 1) are [Replicate, Replicate]. gather's masked strategy puts the same _MaskPartial object
(one shared MaskBuffer) on both mesh dims, and each mesh dim's mask is computed as if that mesh dim
alone split all 8 columns (offset_shape[offset_dim] over that mesh dim's size), not the 2-column
piece the rank really holds. Depending on the id and the rank, a rank gathers the wrong column,
indexes past its local shard, or finds the second mesh dim's mask conflicting with the first's.

Expected: for every id e, scores.gather(-1, ids) redistributed to [Replicate, Replicate] holds
scores[..., e] on every rank. Prints REPRODUCED / NOT REPRODUCED; exit 0 when reproduced, 1 when
not, 2 when it could not run. Runs 4 gloo processes on CPU (spawned by the script; ranks exchange
their outcome through a second gloo group, so a rank that raises leaves no other rank waiting).
"""
import logging
import os
import sys
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

logging.disable(logging.WARNING)
WORLD = 4


def exchange(text, group):
    """Every rank's string (all_gather of fixed-size bytes: all_gather_object needs numpy)."""
    buf = torch.zeros(512, dtype=torch.uint8)
    data = text.encode()[:512]
    buf[: len(data)] = torch.tensor(list(data), dtype=torch.uint8)
    out = [torch.zeros(512, dtype=torch.uint8) for _ in range(WORLD)]
    dist.all_gather(out, buf, group=group)
    return [bytes(o.tolist()).rstrip(b"\0").decode() for o in out]


def rank_main(rank, init_file, out_file):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    control = dist.new_group(backend="gloo")
    mesh = init_device_mesh("cpu", (2, 2))
    full = torch.arange(8, dtype=torch.float32).reshape(1, 1, 8) * 10
    scores = distribute_tensor(full, mesh, [Shard(2), Shard(2)])
    lines = []
    for e in range(8):
        ids = distribute_tensor(torch.tensor([[[e]]]), mesh, [Replicate(), Replicate()])
        try:
            t = scores.gather(-1, ids)  # local: R -> _MaskPartial on both mesh dims, local gather
            mine = "ok"
        except Exception as ex:  # noqa: BLE001 (the point is which error)
            mine = f"{type(ex).__name__}: {str(ex).splitlines()[0]}"
        seen = exchange(mine, control)
        if all(s == "ok" for s in seen):  # every rank gathered: reduce (all_reduce on both dims)
            value = float(t.redistribute(mesh, [Replicate(), Replicate()]).to_local().item())
            seen = [float(v) for v in exchange(repr(value), control)]
            want = float(full[0, 0, e])
            what = "ok" if all(v == want for v in seen) else f"want {want:g}, ranks hold {seen}"
        else:
            what = "; ".join(f"rank {r}: {s}" for r, s in enumerate(seen) if s != "ok")
        lines.append(f"id {e}: {what}")
    if rank == 0:
        with open(out_file, "w") as f:
            f.write("\n".join(lines))
    dist.barrier(group=control)
    dist.destroy_process_group()


def main():
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "out.txt")
        mp.spawn(rank_main, args=(os.path.join(d, "init"), out), nprocs=WORLD, join=True)
        lines = open(out).read().splitlines()
    for line in lines:
        print(f"  {line}")
    bad = [line for line in lines if not line.endswith(": ok")]
    if bad:
        kinds = []
        for k in ("want", "out of bounds", "conflicting data"):
            if any(k in line for line in bad):
                kinds.append({"want": "wrong values"}.get(k, k))
        return True, f"{len(bad)} of 8 ids go wrong on [Shard(2), Shard(2)] ({', '.join(kinds)})"
    return False, "every id gathers the right value on every rank"


if __name__ == "__main__":
    print(f"torch {torch.__version__}")
    try:
        reproduced, detail = main()
    except Exception as e:  # noqa: BLE001
        print(f"ERROR: could not run: {type(e).__name__}: {e}")
        sys.exit(2)
    print(("REPRODUCED: " if reproduced else "NOT REPRODUCED: ") + detail)
    sys.exit(0 if reproduced else 1)
