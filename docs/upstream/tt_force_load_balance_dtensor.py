#!/usr/bin/env python3
"""torchtitan 0.3.0: the MoE router's debug force-load-balance override fails under tensor parallelism
("got mixed torch.Tensor and DTensor").

Since #3386 the router runs on DTensors under TP (MoE.forward: "MoE.forward() operates on
DTensors"). `TokenChoiceTopKRouter._debug_force_load_balance_routing` (config
`debug.moe_force_load_balance`) builds its round-robin ids with a plain `torch.arange(...)` and
calls `scores_BLE.gather(dim=-1, index=ids)` with `scores_BLE` a DTensor, which DTensor refuses.
The script builds torchtitan's own router (`torchtitan.models.common.moe.TokenChoiceTopKRouter`)
with `_debug_force_load_balance=True`, puts its gate weight on a 2-rank tp mesh as a Replicate
DTensor and feeds a Shard(1) DTensor input, as the TP plan does.

Expected: the router returns the round-robin ids and their scores.
The same router without the override runs (checked first, so the failure is the override's).
Prints REPRODUCED / NOT REPRODUCED; exit 0 when reproduced, 1 when not, 2 when it could not run,
3 (SKIPPED) when torchtitan is not installed. One process: fake process group + LocalTensorMode.
Needs torch + torchtitan (checked with torchtitan 0.3.0).
"""
import logging
import sys

import torch
import torch.distributed as dist

logging.disable(logging.WARNING)


def main():
    try:
        import torchtitan
    except ImportError:
        print("SKIPPED: torchtitan is not installed")
        sys.exit(3)
    from torch.distributed._local_tensor import LocalTensorMode
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor
    from torch.testing._internal.distributed.fake_pg import FakeStore
    from torchtitan.models.common.linear import Linear
    from torchtitan.models.common.moe import TokenChoiceTopKRouter

    print(f"torchtitan {getattr(torchtitan, '__version__', '?')}")
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=2)
    torch.manual_seed(0)
    x = torch.randn(2, 4, 8)
    outcome = {}
    with LocalTensorMode(2):
        tp = init_device_mesh("cpu", (2,), mesh_dim_names=("tp",))
        for force in (False, True):
            cfg = TokenChoiceTopKRouter.Config(
                num_experts=4, gate=Linear.Config(in_features=8, out_features=4), top_k=2,
                score_func="sigmoid", _debug_force_load_balance=force)
            router = TokenChoiceTopKRouter(cfg)
            w = distribute_tensor(router.gate.weight.detach(), tp, [Replicate()])
            router.gate.weight = torch.nn.Parameter(w)
            try:
                scores, ids, _ = router(distribute_tensor(x, tp, [Shard(1)]))
                outcome[force] = f"ok (ids {type(ids).__name__}, scores {type(scores).__name__})"
            except Exception as e:  # noqa: BLE001 (the point is which error)
                outcome[force] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
    dist.destroy_process_group()
    print(f"  router(x) on a tp DTensor, no override:  {outcome[False]}")
    print(f"  router(x) with _debug_force_load_balance: {outcome[True]}")
    if outcome[False].startswith("ok") and "mixed torch.Tensor and DTensor" in outcome[True]:
        return True, f"only the override fails: {outcome[True]}"
    return False, f"override: {outcome[True]}; plain: {outcome[False]}"


if __name__ == "__main__":
    print(f"torch {torch.__version__}")
    try:
        reproduced, detail = main()
    except Exception as e:  # noqa: BLE001
        print(f"ERROR: could not run: {type(e).__name__}: {e}")
        sys.exit(2)
    print(("REPRODUCED: " if reproduced else "NOT REPRODUCED: ") + detail)
    sys.exit(0 if reproduced else 1)
