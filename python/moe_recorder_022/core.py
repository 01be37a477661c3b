"""The torchtitan 0.2.2 MoE layer on gloo CPU ranks: build, plain one-rank run, sharded run.

Shared by record.py (the 20 recorded outcomes) and the confirm entry (__main__.py). Importing it
installs the two CPU shims every outcome states in its notes:
  * torch.histc on integer ids -> histc of the float copy, cast back (CUDA behaviour; CPU has no Long histc)
  * generate_permute_indices(use_cpu=True) (the package's own CPU path; default is a Triton kernel)
The layer is sharded by the package's own apply_moe_ep_tp (llama4 parallelize) on a tp mesh of
the case's tp ranks, ep in {1, tp} (ep borrows tp), sequence-parallel input Shard(1).
"""
import functools
import traceback

import torch

_orig_histc = torch.histc


def _histc(x, *a, **k):
    if not x.dtype.is_floating_point:
        return _orig_histc(x.float(), *a, **k).to(x.dtype)
    return _orig_histc(x, *a, **k)


torch.histc = _histc
import torchtitan.models.moe.utils as mu  # noqa: E402
from torchtitan.models.moe.kernels import generate_permute_indices  # noqa: E402

mu.generate_permute_indices = functools.partial(generate_permute_indices, use_cpu=True)
from torch.distributed.tensor import DTensor  # noqa: E402
from torchtitan.models.llama4.infra.parallelize import apply_moe_ep_tp  # noqa: E402
from torchtitan.models.moe.moe import FeedForward, MoE, MoEArgs  # noqa: E402

NOTES = ["torch.histc shim: integer ids counted via float histc, cast back to int64 (CUDA behaviour)",
         "generate_permute_indices called with use_cpu=True (package CPU path)",
         "use_grouped_mm=False (for-loop experts, f32), score_before_experts from router field, no shared experts",
         "no optimizer hook run: expert_bias not updated"]

_DT = {"f32": torch.float32, "bf16": torch.bfloat16, "f64": torch.float64, "i64": torch.int64, "i32": torch.int32}


def tj(t):
    if isinstance(t, DTensor):
        t = t.full_tensor()
    t = t.detach()
    dt = {torch.float32: "f32", torch.int64: "i64"}.get(t.dtype, str(t.dtype))
    vals = t.reshape(-1).tolist()
    if dt == "f32":
        vals = [float("%.9g" % v) for v in vals]
    return {"shape": list(t.shape), "dtype": dt, "values": vals}


def from_json(obj):
    """A case tensor ({"shape", "dtype", "values"}) as a torch tensor."""
    vals = [float(v) if isinstance(v, str) else v for v in obj["values"]]
    if obj["dtype"] in ("f32", "bf16", "f64"):
        t = torch.tensor(vals, dtype=torch.float64).to(torch.float32).to(_DT[obj["dtype"]])
    else:
        t = torch.tensor(vals, dtype=_DT[obj["dtype"]])
    return t.reshape(obj["shape"])


def tensors_of(case):
    """The case's inline tensors (data.tensors), as torch tensors."""
    return {k: from_json(v) for k, v in case["data"]["tensors"].items()}


def build(case, t):
    s = case["subject"]
    d, ro = s["dims"], s["router"]
    g = ro.get("groups") or {}
    args = MoEArgs(num_experts=d["experts"], num_shared_experts=1 if d.get("shared_hidden") else 0,
                   score_func=ro["score_func"], route_norm=ro["route_norm"], route_scale=ro["route_scale"],
                   score_before_experts=ro.get("score_before_experts", False), top_k=d["top_k"],
                   num_expert_groups=g.get("num_groups"), num_limited_groups=g.get("num_limited"),
                   use_grouped_mm=False, load_balance_coeff=s["load_balance_coeff"],
                   _debug_force_load_balance=ro.get("force_load_balance", False))
    moe = MoE(args, dim=d["model"], hidden_dim=d["hidden"])
    if d.get("shared_hidden"):
        moe.shared_experts = FeedForward(dim=d["model"], hidden_dim=d["shared_hidden"])
    with torch.no_grad():
        moe.router.gate.weight.copy_(t["gate"])
        for n in ("w1", "w2", "w3"):
            getattr(moe.experts, n).copy_(t[n])
            if moe.shared_experts is not None:
                getattr(moe.shared_experts, n).weight.copy_(t["shared_" + n])
        if moe.expert_bias is not None and "expert_bias" in t:
            moe.expert_bias.copy_(t["expert_bias"])
        moe.tokens_per_expert.zero_()
    return moe


def outputs(moe, y, xg):
    o = {"y": tj(y)}
    if xg is not None:
        o["x_grad"] = tj(xg)
    o["tokens_per_expert"] = tj(moe.tokens_per_expert)
    if xg is None:
        return o
    o["grad.gate"] = tj(moe.router.gate.weight.grad)
    for n in ("w1", "w2", "w3"):
        o["grad." + n] = tj(getattr(moe.experts, n).grad)
        if moe.shared_experts is not None:
            o["grad.shared_" + n] = tj(getattr(moe.shared_experts, n).weight.grad)
    return o


def backward(case):
    return case["subject"].get("backward", True)


def reference(case, t):
    try:
        moe = build(case, t)
        x = t["x"].clone().requires_grad_(True)
        y = moe(x)
        if backward(case):
            y.backward(t["grad_y"])
        return {"ok": True, "outputs": outputs(moe, y, x.grad if backward(case) else None)}
    except Exception as e:
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}


class Block(torch.nn.Module):
    def __init__(self, moe):
        super().__init__()
        self.moe_enabled = True
        self.moe = moe


class Model(torch.nn.Module):
    def __init__(self, moe):
        super().__init__()
        self.layers = torch.nn.ModuleDict({"0": Block(moe)})


def sharded(rank, case, t):
    """One rank's run: local y and x_grad blocks (Shard(1)), full gradients and counts."""
    from torch.distributed.device_mesh import init_device_mesh
    tp = case["mesh"]["shape"][2]
    ep = case["subject"]["parallel"]["ep"]
    stage = "config"
    try:
        tp_mesh = init_device_mesh("cpu", (tp,), mesh_dim_names=("tp",))
        ep_mesh = init_device_mesh("cpu", (tp,), mesh_dim_names=("ep",)) if ep == tp and ep > 1 else None
        moe = build(case, t)
        stage = "parallelize"
        apply_moe_ep_tp(Model(moe), tp_mesh, ep_mesh, None, None)
        stage = "forward"
        x_full = t["x"]
        L = x_full.shape[1]
        c = -(-L // tp)
        x = x_full[:, rank * c:(rank + 1) * c].clone().requires_grad_(True)
        y = moe(x)
        y_loc = y.to_local() if isinstance(y, DTensor) else y
        if backward(case):
            stage = "backward"
            gy = t["grad_y"][:, rank * c:(rank + 1) * c]
            y_loc.backward(gy)
        stage = "collect"
        o = outputs(moe, y_loc, x.grad if backward(case) else None)  # y, x_grad local S(1) blocks
        locs = {k: o.pop(k) for k in ("y", "x_grad") if k in o}
        return {"ok": True, "stage": None, "error": None, "locals": locs, "outputs": o, "y_type": type(y).__name__}
    except Exception as e:
        return {"ok": False, "stage": stage, "error": f"{type(e).__name__}: {e}",
                "kind": type(e).__name__, "message": str(e), "tb": traceback.format_exc()[-1500:]}


def cat_seq(parts):
    ts = [torch.tensor(p["values"]).reshape(p["shape"]) for p in parts]
    return tj(torch.cat(ts, dim=1))
