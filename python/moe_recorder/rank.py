"""One gloo rank of the MoE recorder (runs with the torchtitan venv's python).

    python -m moe_recorder.rank --rank R --world W --init tcp://127.0.0.1:PORT [--pg-timeout S]

Reads one JSON command per line on stdin ({"id": n, "case": {...}} or {"quit": true}), runs the
case with torchtitan's own code and writes JSON lines on stdout: {"id", "rank", "progress": stage}
as it goes, then {"id", "rank", "done": true, ...result}. Anything else the libraries print goes to
stderr. The process stays up across cases of one world size; the driver restarts it after an error
past the config stage (collectives may be left out of step) or a hang."""

import argparse
import datetime
import json
import os
import sys
import time
import traceback

STAGES = ("config", "mesh", "parallelize", "forward", "backward", "hook")


class StageError(Exception):
    def __init__(self, stage, exc, tb):
        super().__init__(str(exc))
        self.stage, self.exc, self.tb = stage, exc, tb


def _setup_torchtitan():
    import torchtitan.distributed.parallel_dims as pdm
    import torchtitan.distributed.utils as du
    import torchtitan.models.common.token_dispatcher as tdm
    import torchtitan.tools.utils as tu

    # torchtitan picks "cuda" when no accelerator is found; run everything on CPU.
    for mod in (pdm, du, tdm, tu):
        if hasattr(mod, "device_type"):
            mod.device_type = "cpu"


# ----------------------------------------------------------------------------- tensors in JSON

_DT = {"f32": "float32", "bf16": "bfloat16", "i64": "int64", "f64": "float64", "bool": "bool", "i32": "int32"}


def tensor_from_json(obj):
    import torch
    dtype = getattr(torch, _DT[obj["dtype"]])
    vals = [float(v) if isinstance(v, str) else v for v in obj["values"]]
    if obj["dtype"] in ("f32", "bf16", "f64"):
        t = torch.tensor(vals, dtype=torch.float64).to(torch.float32 if obj["dtype"] != "f64" else torch.float64)
        t = t.to(dtype)
    else:
        t = torch.tensor(vals, dtype=dtype)
    return t.reshape(obj["shape"])


def _num(v):
    if v != v:
        return "NaN"
    if v == float("inf"):
        return "Infinity"
    if v == float("-inf"):
        return "-Infinity"
    return v


def tensor_to_json(t):
    import torch
    from torch.distributed.tensor import DTensor
    if isinstance(t, DTensor):
        t = t.to_local()
    t = t.detach()
    names = {torch.float32: "f32", torch.bfloat16: "bf16", torch.int64: "i64", torch.bool: "bool",
             torch.float64: "f64", torch.int32: "i32", torch.float16: "f16"}
    dt = names.get(t.dtype, str(t.dtype))
    flat = t.reshape(-1)
    if t.dtype in (torch.float32, torch.bfloat16, torch.float16):
        from .assemble import shortest
        vals = [shortest(float(v)) for v in flat.to(torch.float64).tolist()]
    elif t.dtype.is_floating_point:
        vals = [_num(float(v)) for v in flat.to(torch.float64).tolist()]
    else:
        vals = flat.tolist()
    return {"shape": list(t.shape), "dtype": dt, "values": vals}


def layout_to_json(layout, mesh_kind):
    """A torchtitan SpmdLayout as plain JSON: per-axis types and the partition spec."""
    if layout is None:
        return None
    axes = {str(k.value if hasattr(k, "value") else k): repr(v) for k, v in layout.axis_types.items()}
    spec = None
    if layout.partition_spec is not None:
        spec = []
        for entry in layout.partition_spec:
            if entry is None:
                spec.append(None)
            else:
                ent = entry if isinstance(entry, tuple) else (entry,)
                spec.append([str(a.value if hasattr(a, "value") else a) for a in ent])
    return {"mesh": mesh_kind, "axes": axes, "spec": spec}


# ----------------------------------------------------------------------------- the worker

class Worker:
    def __init__(self, rank, world, out):
        self.rank, self.world, self.out = rank, world, out
        self.pd_cache = {}
        self.state = None

    def emit(self, obj):
        self.out.write(json.dumps(obj) + "\n")
        self.out.flush()

    # -- helpers -------------------------------------------------------------------------
    def parallel_dims(self, key, build):
        """ParallelDims, validated (config stage) and, with build, its meshes built (mesh stage).
        Cached per (dp_replicate, dp_shard, cp, tp, ep, backend): building a mesh creates gloo
        groups, which every rank must do together, so each layout is built once per process."""
        from torchtitan.distributed.parallel_dims import ParallelDims
        ent = self.pd_cache.get(key)
        if ent is None:
            dpr, dps, cp, tp, ep, backend = key
            try:
                pd = ParallelDims(dp_replicate=dpr, dp_shard=dps, cp=cp, tp=tp, pp=1, ep=ep,
                                  world_size=self.world, spmd_backend=backend)
            except Exception as e:
                raise StageError("config", e, traceback.format_exc())
            ent = self.pd_cache[key] = {"pd": pd, "built": False, "err": None}
        if build and not ent["built"]:
            if ent["err"] is not None:
                raise ent["err"]
            try:
                ent["pd"].build_mesh()
                ent["built"] = True
            except Exception as e:
                ent["err"] = StageError("mesh", e, traceback.format_exc())
                raise ent["err"]
        return ent["pd"]

    def name_groups(self, pd, groups):
        for name, mesh in pd._single_axis_meshes.items():
            try:
                if mesh.ndim == 1:
                    groups.add(name, mesh.get_group())
            except Exception:  # noqa: BLE001
                pass
        for key in ("spmd_dense_for_fwdbwd", "spmd_sparse_for_fwdbwd"):
            m = pd._global_meshes.get(key)
            if m is None:
                continue
            for ax in m.mesh_dim_names:
                try:
                    groups.add(ax, m.get_group(ax))
                except Exception:  # noqa: BLE001
                    pass

    # -- one case ------------------------------------------------------------------------
    def run(self, cid, case):
        from . import commlog
        import torch
        self.cid = cid
        state = commlog.State()
        groups = commlog.Groups()
        res = {"outputs": {}, "layouts": {}, "types": {}, "comms": [], "comms_spmd": [], "notes": []}
        if self.rank == 0 and case.get("subject", {}).get("kind") == "moe":
            # the unsharded reference, before the sharded run (it touches no process group)
            from . import reference
            try:
                res["reference"] = reference.compute(case)
            except Exception as e:  # noqa: BLE001
                res["reference"] = {"ok": False, "error": {"kind": type(e).__name__, "message": str(e)[:300]}}
        t0 = time.time()
        try:
            self._run(case, state, groups, res)
            res["ok"] = True
            res["stage"] = None
            res["error"] = None
        except StageError as e:
            res["ok"] = False
            res["stage"] = e.stage
            msg = str(e.exc)
            res["error"] = {"kind": type(e.exc).__name__, "message": msg.splitlines()[0] if msg else "",
                            "full": msg[:4000], "traceback": e.tb[-3000:]}
        finally:
            import spmd_types._dist as sd
            sd.set_dist(None)
        res["seconds"] = round(time.time() - t0, 3)
        res["id"] = cid
        res["rank"] = self.rank
        res["done"] = True
        self.emit(res)

    def progress(self, stage):
        self.emit({"id": self.cid, "rank": self.rank, "progress": stage})

    def _run(self, case, state, groups, res):
        import torch
        import torch.distributed as dist
        import spmd_types as spmd
        import spmd_types._dist as sd
        from torch.distributed.tensor import DTensor
        from . import commlog
        import torchtitan.distributed.utils as du
        from torchtitan.models.common.moe_sharding import set_moe_sharding_config
        from torchtitan.models.common.config_utils import (
            make_ffn_config, make_moe_config, make_routed_experts_config, make_router_config)
        from torchtitan.components.optimizer import register_moe_load_balancing_hook

        subj = case["subject"]
        dims = subj["dims"]
        par = subj["parallel"]
        backend = subj["backend"]
        dp, cp, tp = (int(s) for s in case["mesh"]["shape"])
        dpr = int(par.get("dp_replicate", 1))
        ep = int(par.get("ep", 1))
        sp = bool(par.get("sp", True))
        dps = dp // dpr
        B, L, D, F, E, K = (int(dims[k]) for k in ("batch", "seq", "model", "hidden", "experts", "top_k"))
        Fs = dims.get("shared_hidden")
        router = subj.get("router", {})
        groups_cfg = router.get("groups")
        coeff = subj.get("load_balance_coeff")
        do_backward = bool(subj.get("backward", True))
        typecheck = bool(subj.get("typecheck", False))
        tensors = case["data"]["tensors"]
        dtype = torch.float32 if case.get("dtype", "f32") == "f32" else torch.bfloat16

        # ---- config: ParallelDims validation, the trainer's sequence check, the MoE config
        self.progress("config")
        set_axis_names(dp, cp, tp, dpr, dps, (dps * cp * tp) // ep if ep else 0, ep)
        du.set_spmd_backend(backend)
        key = (dpr, dps, cp, tp, ep, backend)
        self.parallel_dims(key, build=False)
        if True:
            if subj.get("trainer_checks", True):
                divisor = (tp if sp else 1) * (2 * cp if cp > 1 else 1)
                if L % divisor != 0:
                    raise StageError("config", ValueError(
                        f"Training sequence length ({L}) must be divisible by {divisor} for the configured "
                        "sequence/context parallelism."), "trainer.py: seq_len_divisor check (replayed)")
            try:
                router_cfg = make_router_config(
                    dim=D, num_experts=E, gate_param_init={"weight": lambda t: None}, top_k=K,
                    score_func=router.get("score_func", "sigmoid"), route_norm=bool(router.get("route_norm", False)),
                    route_scale=float(router.get("route_scale", 1.0)),
                    num_expert_groups=None if groups_cfg is None else groups_cfg.get("num_groups"),
                    num_limited_groups=None if groups_cfg is None else groups_cfg.get("num_limited"))
                router_cfg._debug_force_load_balance = bool(router.get("force_load_balance", False))
                routed_cfg = make_routed_experts_config(
                    dim=D, hidden_dim=F, num_experts=E, top_k=K, param_init={}, comm_backend="standard")
                shared_cfg = None
                if Fs is not None:
                    noinit = {"weight": lambda t: None}
                    shared_cfg = make_ffn_config(dim=D, hidden_dim=int(Fs), w1_param_init=noinit,
                                                 w2w3_param_init=noinit)
                moe_cfg = make_moe_config(num_experts=E, router=router_cfg, routed_experts=routed_cfg,
                                          shared_experts=shared_cfg, load_balance_coeff=coeff)
                set_moe_sharding_config(moe_cfg, enable_ep=ep > 1, enable_sp=sp, expert_param_layout={
                    "w1_EFD": spmd.S(1), "w2_EDF": spmd.S(2), "w3_EFD": spmd.S(1)})
                moe = moe_cfg.build()
                moe.train()
            except Exception as e:
                raise StageError("config", e, traceback.format_exc())

        # ---- mesh: ParallelDims.build_mesh (gloo groups for every axis of size > 1)
        self.progress("mesh")
        pd = self.parallel_dims(key, build=True)
        self.name_groups(pd, groups)

        # comm hooks for everything from here on
        proxy = commlog.SpmdDist(groups, state)
        sd.set_dist(proxy)
        c10d_log = commlog.C10dLog(groups, state)

        # ---- parallelize: weights in, then torchtitan's own Module.parallelize
        self.progress("parallelize")
        state.phase = "parallelize"
        names = {"gate": (moe.router.gate, "weight"),
                 "w1": (moe.routed_experts.inner_experts, "w1_EFD"),
                 "w2": (moe.routed_experts.inner_experts, "w2_EDF"),
                 "w3": (moe.routed_experts.inner_experts, "w3_EFD")}
        if moe.shared_experts is not None:
            names.update({"shared_w1": (moe.shared_experts.w1, "weight"),
                          "shared_w2": (moe.shared_experts.w2, "weight"),
                          "shared_w3": (moe.shared_experts.w3, "weight")})
        try:
            with torch.no_grad():
                for name, (mod, attr) in names.items():
                    src = tensor_from_json(tensors[name]).to(dtype)
                    p = getattr(mod, attr)
                    if tuple(p.shape) != tuple(src.shape):
                        raise ValueError(f"case tensor {name} has shape {list(src.shape)}, module wants {list(p.shape)}")
                    setattr(mod, attr, torch.nn.Parameter(src.clone()))
                if moe.expert_bias_E is not None:
                    if "expert_bias" in tensors:
                        moe.expert_bias_E.copy_(tensor_from_json(tensors["expert_bias"]).float())
            with c10d_log:
                moe.parallelize(pd)
        except Exception as e:
            raise StageError("parallelize", e, traceback.format_exc())

        # layouts declared by torchtitan's sharding configs (what the driver assembles with)
        ep_on = ep > 1
        mesh_kind = {"gate": "dense", "shared_w1": "dense", "shared_w2": "dense", "shared_w3": "dense"}
        for n in ("w1", "w2", "w3"):
            mesh_kind[n] = "sparse" if ep_on else "dense"
        for name, (mod, attr) in names.items():
            res["layouts"]["grad." + name] = layout_to_json(mod._sharding_config.state_shardings[attr], mesh_kind[name])
            res["layouts"]["param." + name] = res["layouts"]["grad." + name]
        msc = moe._sharding_config
        res["layouts"]["y"] = layout_to_json(msc.out_dst_shardings, "dense")
        res["layouts"]["x"] = layout_to_json(msc.in_src_shardings["x_BLD"], "dense")
        res["layouts"]["x_grad"] = res["layouts"]["x"]
        res["layouts"]["tokens_per_expert"] = layout_to_json(msc.state_shardings["tokens_per_expert_E"], "dense")
        res["layouts"]["expert_bias"] = layout_to_json(msc.state_shardings["expert_bias_E"], "dense")
        for name, (mod, attr) in names.items():
            p = getattr(mod, attr)
            res["types"]["param." + name] = describe_type(p)
        for b in ("tokens_per_expert_E", "expert_bias_E"):
            t = getattr(moe, b)
            if t is not None:
                res["types"][b] = describe_type(t)

        # ---- inputs: this rank's block of x and grad_y, as the MoE's in_src layout lays them out
        x_full = tensor_from_json(tensors["x"]).to(dtype)
        coords = dense_coords(self.rank, dp, cp, tp)
        x_local = local_block(x_full, coords, dp, cp, tp, sp)
        x_local = x_local.clone().requires_grad_(do_backward)

        captured = {}

        def router_hook(mod, inp, out):
            captured["router"] = out

        moe.router.register_forward_hook(router_hook)

        ctx = du.get_spmd_context(parallel_dims=pd, spmd_typechecking=typecheck)
        self.progress("forward")
        state.phase = "forward"
        y = None
        try:
            with ctx(), c10d_log:
                xin = x_local
                if backend == "full_dtensor":
                    xin = full_dtensor_input(x_local, pd, msc.in_src_shardings["x_BLD"])
                if typecheck and backend == "spmd_types":
                    lay = msc.in_src_shardings["x_BLD"]
                    spmd.assert_type(xin, lay.axis_types, lay.partition_spec)
                y = moe(xin)
        except Exception as e:
            raise StageError("forward", e, traceback.format_exc())
        res["outputs"]["y"] = tensor_to_json(y)
        res["layouts"]["y"] = effective_layout(res["layouts"]["y"], y)
        res["types"]["y"] = describe_type(y)
        if "router" in captured:
            sc, ids, _scores = captured["router"]
            sc = sc.to_local() if isinstance(sc, DTensor) else sc
            ids = ids.to_local() if isinstance(ids, DTensor) else ids
            order = torch.argsort(ids, dim=-1, stable=True)
            res["outputs"]["router.topk_ids"] = tensor_to_json(torch.gather(ids, -1, order))
            res["outputs"]["router.topk_scores"] = tensor_to_json(torch.gather(sc.detach(), -1, order))
        res["outputs"]["tokens_per_expert"] = tensor_to_json(moe.tokens_per_expert_E)
        res["layouts"]["tokens_per_expert"] = effective_layout(res["layouts"]["tokens_per_expert"],
                                                               moe.tokens_per_expert_E)

        if do_backward:
            self.progress("backward")
            state.phase = "backward"
            try:
                gy_full = tensor_from_json(tensors["grad_y"]).to(dtype)
                gy_local = local_block(gy_full, coords, dp, cp, tp, sp)
                with ctx(), c10d_log:
                    if isinstance(y, DTensor):
                        y_loc = y.to_local(grad_placements=y.placements)
                    else:
                        y_loc = y
                    if tuple(y_loc.shape) != tuple(gy_local.shape):
                        res["notes"].append(f"y local shape {list(y_loc.shape)} != grad_y block {list(gy_local.shape)}")
                    y_loc.backward(gy_local)
            except Exception as e:
                raise StageError("backward", e, traceback.format_exc())
            if x_local.grad is not None:
                res["outputs"]["x_grad"] = tensor_to_json(x_local.grad)
            for name, (mod, attr) in names.items():
                p = getattr(mod, attr)
                if p.grad is not None:
                    res["outputs"]["grad." + name] = tensor_to_json(p.grad)
                    res["layouts"]["grad." + name] = effective_layout(res["layouts"]["grad." + name], p.grad)
                    res["types"]["grad." + name] = describe_type(p.grad)

        # ---- the optimizer pre-hook (expert bias update), outside the spmd context as in the trainer
        if moe.load_balance_coeff is not None:
            self.progress("hook")
            state.phase = "hook"
            try:
                model = _HookModel(moe)
                dummy = torch.nn.Parameter(torch.zeros(1))
                opt = torch.optim.SGD([dummy], lr=0.0)
                register_moe_load_balancing_hook(opt, [model], pd)
                with c10d_log:
                    opt.step()
            except Exception as e:
                raise StageError("hook", e, traceback.format_exc())
            res["outputs"]["expert_bias"] = tensor_to_json(moe.expert_bias_E)
            res["layouts"]["expert_bias"] = effective_layout(res["layouts"]["expert_bias"], moe.expert_bias_E)
            res["outputs"]["tokens_per_expert_after_hook"] = tensor_to_json(moe.tokens_per_expert_E)
        res["comms"] = c10d_log.records
        res["comms_spmd"] = proxy.records


def effective_layout(layout, t):
    """The config's layout, with the model-parallel axes (tp, ep) a DTensor lives on replaced by
    its actual placements (Replicate -> "I": every rank holds the whole value, nothing pending;
    Partial -> "P"; Shard(d) -> "S(d)"). Under the DTensor backends this is what a gradient really
    is on tp/ep: FSDP only reduces the data-parallel axes, so an R@tp parameter's gradient that
    DTensor already all-reduced is complete on every tp rank, not pending. On the data-parallel axes
    (FSDP_AXES) a Replicate placement keeps the layout's type (R: FSDP's sum); Partial or Shard
    there replace it. full_dtensor's dp_replicate and dp_shard fold into the compute mesh's dp
    (size-1 axes ignored)."""
    from torch.distributed.tensor import DTensor, Partial, Replicate, Shard
    if layout is None or not isinstance(t, DTensor):
        return layout
    out = {"mesh": layout["mesh"], "axes": dict(layout["axes"]), "spec": None, "dtensor_axes": []}
    spec = layout.get("spec")
    if spec:
        for dim, entry in enumerate(spec):
            for a in entry or []:
                out["axes"][a] = f"S({dim})"

    def conv(p):
        if isinstance(p, Replicate):
            return "I"
        if isinstance(p, Partial):
            return "P"
        if isinstance(p, Shard):
            return f"S({p.dim})"
        return str(p)

    mesh = t.device_mesh
    names = list(mesh.mesh_dim_names or ())
    folded = []
    for i, (name, p) in enumerate(zip(names, t.placements)):
        if layout["mesh"] == "dense" and name in ("dp_replicate", "dp_shard"):
            if mesh.size(i) > 1:
                folded.append(p)
            continue
        if name in FSDP_AXES and isinstance(p, Replicate):
            continue  # FSDP's axis: the local value is this rank's contribution (layout's R stands)
        out["axes"][name] = conv(p)
        out["dtensor_axes"].append(name)
    folded = [p for p in folded if not isinstance(p, Replicate)]
    if folded:
        names_f = [conv(p) for p in folded]
        out["axes"]["dp"] = names_f[0] if all(f == names_f[0] for f in names_f) else "mixed:" + "/".join(names_f)
        out["dtensor_axes"].append("dp")
    return out


# Data-parallel axes: FSDP owns them. A DTensor that says Replicate there (GroupedExperts takes
# `to_local()` of its weights, so their gradients come back labelled with the weights' Replicate
# while each rank holds only its own tokens' contribution) is summed like the layout's R.
FSDP_AXES = ("dp_replicate", "dp_shard", "dp", "cp", "efsdp")


# spmd_types keys a local type by a MeshAxis, which is a (shape, stride) layout of ranks; its printed
# name is whichever name that layout was first registered under in this process (history-dependent).
# The recorder names it after the case's mesh axes with that layout instead (set per case by
# set_axis_names): "tp", "cp", "ep", or "tp|ep" when two axes have the same ranks.
AXIS_NAMES = {}


def set_axis_names(dp, cp, tp, dpr, dps, efsdp, ep):
    AXIS_NAMES.clear()
    try:
        from spmd_types._mesh_axis import MeshAxis
    except Exception:  # noqa: BLE001
        return
    axes = [("dp", dp, cp * tp), ("cp", cp, tp), ("tp", tp, 1), ("dp_replicate", dpr, efsdp * ep),
            ("dp_shard", dps, cp * tp), ("efsdp", efsdp, ep), ("ep", ep, 1)]
    for name, size, stride in axes:
        if size <= 1:
            continue
        key = _layout_key(MeshAxis.of(size, stride))
        if name not in AXIS_NAMES.setdefault(key, []):
            AXIS_NAMES[key].append(name)


def _layout_key(axis):
    lay = getattr(axis, "layout", None)
    if lay is None:
        return str(axis)
    return f"{tuple(lay.shape)}:{tuple(lay.stride)}"


def _axis_name(k):
    key = _layout_key(k)
    names = AXIS_NAMES.get(key)
    if names:
        return "|".join(names)
    lay = getattr(k, "layout", None)
    if lay is not None:
        return "ranks" + ":".join(str(x) for x in (tuple(lay.shape) + tuple(lay.stride)))
    return str(getattr(k, "name", k))


def describe_type(t):
    from torch.distributed.tensor import DTensor
    if isinstance(t, DTensor):
        return {"dtensor": [str(p) for p in t.placements], "mesh": list(t.device_mesh.mesh_dim_names or [])}
    try:
        from spmd_types.runtime import get_local_type, has_local_type
        if has_local_type(t):
            items = sorted((_axis_name(k), repr(v)) for k, v in get_local_type(t).items())
            return {"spmd": dict(items)}
    except Exception:  # noqa: BLE001
        pass
    return None


def _hook_model_class():
    import torch.nn as nn

    class Block(nn.Module):
        moe_enabled = True

        def __init__(self, moe):
            super().__init__()
            self.moe = moe

    class Model(nn.Module):
        def __init__(self, moe):
            super().__init__()
            self.layers = nn.ModuleDict({"0": Block(moe)})

    return Model


def _HookModel(moe):
    return _hook_model_class()(moe)


def dense_coords(rank, dp, cp, tp):
    return (rank // (cp * tp), (rank // tp) % cp, rank % tp)


def _chunk(t, n, i, dim):
    import torch
    chunks = torch.chunk(t, n, dim=dim)
    if i < len(chunks):
        return chunks[i]
    shape = list(t.shape)
    shape[dim] = 0
    return t.new_empty(shape)


def local_block(full, coords, dp, cp, tp, sp):
    """This rank's block of a (B, L, D) activation in the MoE's in_src layout: batch chunk d of dp,
    sequence chunk c of cp, and with SP also chunk t of tp inside it (torch.chunk sizing, as
    spmd_types' shard does; a rank past the last chunk gets an empty block)."""
    d, c, t = coords
    x = _chunk(full, dp, d, 0)
    x = _chunk(x, cp, c, 1)
    if sp:
        x = _chunk(x, tp, t, 1)
    return x.contiguous()


def full_dtensor_input(x_local, pd, layout):
    from torch.distributed.tensor import DTensor
    from torchtitan.protocols.sharding import resolve_placements
    mesh = pd.resolve_shared_mesh([layout])
    if mesh is None:
        return x_local
    return DTensor.from_local(x_local, mesh, resolve_placements(layout, mesh), run_check=False)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--rank", type=int, required=True)
    ap.add_argument("--world", type=int, required=True)
    ap.add_argument("--init", required=True)
    ap.add_argument("--pg-timeout", type=float, default=300.0)
    a = ap.parse_args(argv)
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    import faulthandler
    import signal
    # the driver sends SIGUSR1 to a rank that hangs: its Python stack goes to the rank log
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=False)
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    _setup_torchtitan()
    timeout = datetime.timedelta(seconds=a.pg_timeout)
    import torch.distributed.distributed_c10d as c10d
    c10d.default_pg_timeout = timeout
    dist.init_process_group("gloo", init_method=a.init, rank=a.rank, world_size=a.world, timeout=timeout)
    w = Worker(a.rank, a.world, out)
    from importlib import metadata
    vers = {}
    for pkg in ("torch", "torchtitan", "spmd_types"):
        try:
            vers[pkg] = metadata.version(pkg)
        except Exception:  # noqa: BLE001
            vers[pkg] = None
    w.emit({"ready": True, "rank": a.rank, **vers})
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        msg = json.loads(line)
        if msg.get("quit"):
            break
        w.run(msg["id"], msg["case"])
    try:
        dist.destroy_process_group()
    except Exception:  # noqa: BLE001
        pass


if __name__ == "__main__":
    main()
