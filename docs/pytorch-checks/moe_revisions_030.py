"""Checks behind the [run] entries of docs/moe-revisions.md (shardfuzz).

Runs the real torchtitan 0.3.0 MoE layer (spmd_types 0.2.3, torch 2.14.0, CPU) on gloo ranks,
one process per rank, and prints one line per rank. Launch with torchrun, e.g.

    VENV=~/.cache/shardfuzz/venv-torchtitan-0.3.0-torch-2.14.0
    TORCH_DISTRIBUTED_DEBUG=DETAIL OMP_NUM_THREADS=1 $VENV/bin/python -m torch.distributed.run \
        --nproc_per_node 2 docs/pytorch-checks/moe_revisions_030.py MODE BACKEND EP TP SP B L

MODE      forward   forward + backward of sum(y * cos(k)); prints y, x.grad and weight gradients
          igp-none  the same, with the routed experts' in_grad_placements set to None: the EP-off
                    behaviour of torchtitan b052f36fe .. 57cfb2745 (#4054) on the 0.3.0 code
          hook      forward + backward, then the real load-balancing hook; prints local counts and
                    expert_bias_E
          hook-pre  the same, with the hook told that EP is off, which skips exactly its TP
                    all-reduce: the spmd_types path before #4154 (7c6f9f734)
BACKEND   spmd_types | partial_dtensor
EP TP     degrees (world size = 2 in the runs quoted; dp_shard = world / TP)
SP        sp | nosp (with sp every rank is given its torch.chunk of the sequence)
B L       batch and sequence length of the MoE input (B, L, D)

Set NOSHARED=1 to build the layer without shared experts, ZERO_SHARED=1 to keep them with a zero
w2 (same weights otherwise: x.grad is then the routed experts' and router's part alone), and
XGRAD=1 to print the whole local x.grad. gloo's list all_to_all rejects unequal
chunks, so spmd_types' collectives are routed through all_to_all_single (spmd_types._dist.set_dist).
Grouped GEMM needs dims that are multiples of 8 (bf16 strides), hence D = 8, F = 16.
"""

import os
import sys
import types
from functools import partial

import torch
import torch.distributed as dist
from torch import nn

mode, backend = sys.argv[1], sys.argv[2]
ep, tp = int(sys.argv[3]), int(sys.argv[4])
sp = sys.argv[5] == "sp"
B, L = int(sys.argv[6]), int(sys.argv[7])

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()

import spmd_types as spmd  # noqa: E402
import spmd_types._dist as spmd_dist  # noqa: E402
import torchtitan.distributed.parallel_dims as parallel_dims_mod  # noqa: E402
from torchtitan.components.optimizer.optimizer import (  # noqa: E402
    register_moe_load_balancing_hook,
)
from torchtitan.distributed import utils as dist_utils  # noqa: E402
from torchtitan.distributed.parallel_dims import ParallelDims  # noqa: E402
from torchtitan.models.common.config_utils import (  # noqa: E402
    make_ffn_config,
    make_moe_config,
    make_routed_experts_config,
    make_router_config,
)
from torchtitan.models.common.moe_sharding import set_moe_sharding_config  # noqa: E402

parallel_dims_mod.device_type = "cpu"


def _uneven_all_to_all(outs, ins, group=None, async_op=False):
    flat_in = torch.cat([t.contiguous() for t in ins])
    flat_out = torch.empty(
        (sum(o.shape[0] for o in outs),) + tuple(flat_in.shape[1:]), dtype=flat_in.dtype
    )
    dist.all_to_all_single(
        flat_out,
        flat_in,
        [o.shape[0] for o in outs],
        [t.shape[0] for t in ins],
        group=group,
    )
    offset = 0
    for o in outs:
        o.copy_(flat_out[offset : offset + o.shape[0]])
        offset += o.shape[0]


class _DistWithUnevenAllToAll(types.ModuleType):
    def __getattr__(self, name):
        return getattr(torch.distributed, name)


_shim = _DistWithUnevenAllToAll("dist_with_uneven_all_to_all")
_shim.all_to_all = _uneven_all_to_all
spmd_dist.set_dist(_shim)

D, F, E, K = 8, 16, 4, 2
init = {"weight": partial(nn.init.normal_, std=0.5), "bias": nn.init.zeros_}
experts_init = {name: init["weight"] for name in ("w1_EFD", "w2_EDF", "w3_EFD")}
cfg = make_moe_config(
    num_experts=E,
    router=make_router_config(dim=D, num_experts=E, gate_param_init=init, top_k=K),
    routed_experts=make_routed_experts_config(
        dim=D,
        hidden_dim=F,
        num_experts=E,
        top_k=K,
        param_init=experts_init,
        comm_backend="standard",
    ),
    shared_experts=None
    if os.environ.get("NOSHARED")
    else make_ffn_config(dim=D, hidden_dim=F, w1_param_init=init, w2w3_param_init=init),
)
pd = ParallelDims(
    dp_replicate=1,
    dp_shard=world // tp,
    cp=1,
    tp=tp,
    pp=1,
    ep=ep,
    world_size=world,
    spmd_backend=backend,
)
pd.build_mesh()
dist_utils.set_spmd_backend(backend)
set_moe_sharding_config(
    cfg,
    enable_ep=ep > 1,
    enable_sp=sp,
    expert_param_layout={"w1_EFD": spmd.S(1), "w2_EDF": spmd.S(2), "w3_EFD": spmd.S(1)},
)
if mode == "igp-none":
    cfg.routed_experts.sharding_config.local_map.in_grad_placements = None

torch.manual_seed(0)
moe = cfg.build()
moe.init_states(buffer_device=torch.device("cpu"))


def local(t):
    return t.to_local() if hasattr(t, "to_local") else t


try:
    moe.parallelize(pd)
    if os.environ.get("ZERO_SHARED"):
        with torch.no_grad():
            moe.shared_experts.w2.weight.zero_()
    torch.manual_seed(1)
    x = torch.randn(B, L, D)
    if sp:
        x = x.chunk(tp, dim=1)[rank % tp].contiguous()
    x.requires_grad_(True)
    moe.train()
    with dist_utils.get_spmd_context(parallel_dims=pd)():
        y = local(moe(x))
        weights = torch.arange(y.numel()).reshape(y.shape).float().cos()
        (y * weights).sum().backward()
    line = (
        f"rank{rank} OK mode={mode} y_shape={tuple(y.shape)} y_sum={y.sum().item():.6f} "
        f"xgrad_sum={x.grad.sum().item():.6f} xgrad_first={[round(v, 4) for v in x.grad.flatten()[:3].tolist()]} "
        f"gate_grad_norm={local(moe.router.gate.weight.grad).norm().item():.6f} "
        f"w1_grad_norm={local(moe.routed_experts.inner_experts.w1_EFD.grad).norm().item():.6f}"
    )
    if os.environ.get("XGRAD"):
        line += f" xgrad={[round(v, 4) for v in x.grad.flatten().tolist()]}"
    if mode.startswith("hook"):
        counts = local(moe.tokens_per_expert_E).clone()

        class _Block(nn.Module):
            def __init__(self, m):
                super().__init__()
                self.moe = m
                self.moe_enabled = True

        class _Part(nn.Module):
            def __init__(self, m):
                super().__init__()
                self.layers = nn.ModuleDict({"0": _Block(m)})

        hooks = []

        class _Optimizers:
            def register_step_pre_hook(self, hook):
                hooks.append(hook)

        class _EpOffForHook:
            ep_enabled = False

            def __getattr__(self, name):
                return getattr(pd, name)

        register_moe_load_balancing_hook(
            _Optimizers(), [_Part(moe)], pd if mode == "hook" else _EpOffForHook()
        )
        hooks[0]()
        bias = local(moe.expert_bias_E).tolist()
        line += f" local_counts={counts.tolist()} expert_bias={[round(v, 6) for v in bias]}"
    print(line, flush=True)
except Exception as e:  # one line per rank, first line of the message
    print(f"rank{rank} ERR {type(e).__name__}: {str(e).splitlines()[0][:300]}", flush=True)
dist.destroy_process_group()
