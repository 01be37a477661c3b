#!/usr/bin/env python3
"""router_oracle.py: run shardfuzz router cases on REAL PyTorch DTensor (one gloo process per rank).

Reads case files (format shardfuzz.case/1, tensors inline) and prints one outcome line per case
(format shardfuzz.outcome/1, same layout as tests/golden/*.outcome.json), in input order.

    python3 router_oracle.py [--out FILE.jsonl] [--python RULES=PYTHON ...] CASE.json|DIR ...

Driver (any python, torch not needed): groups cases by (revision.rules, world size = prod(mesh.shape)) and
runs each group in ONE launch of `python -m torch.distributed.run --standalone --nproc_per_node W` with the
interpreter of the matching torch: torch-2.12 -> $SHARDFUZZ_SCRATCH/t2121, torch-2.13 -> t2130,
torch-2.14 -> t2140, torch-2.15 -> t2150 (SHARDFUZZ_SCRATCH defaults to ~/.cache/shardfuzz-scratch; override with --python).

Worker (one process per rank): loops over the group's cases. Per case:
  1. build x (B,L,D), gate (E,D) (and gate_bias (E,)) in the case dtype and expert_bias (E,) float32 from
     case.tensors; place them with distribute_tensor(full, mesh, placements) (a Partial input is replicated,
     then partitioned: P(sum) holds full / n on every rank, P(avg|max|min) the full value);
  2. run the router as revision.router writes it (see `router` below) under CommDebugMode;
  3. exchange every rank's status (ok / exception type / message / per-op comm counts / output metadata and
     local shards) over a separate gloo "control" group;
  4. if all ranks agree on a global shape, values come from full_tensor(); otherwise they are rebuilt from
     the local shards (golden 09's note);
  5. rank 0 appends the outcome line to the results file.
Lockstep: a rank that raises while another rank waits in a collective leaves the waiting rank to time out
(main process-group timeout, --pg-timeout, default 300 s). Each case ends with the control-group exchange, so
every rank learns whether the ranks diverged: if any rank timed out, or the ranks issued different
collectives (per-op counts differ), the main process group can no longer be trusted: rank 0 records the case
(sharded.ok false, error of the lowest rank that raised, every rank's error under `rank_errors`), all ranks
exit with status 3 and the driver relaunches the group from the next case. A launch that dies without a line
for its current case gets a `WorkerCrash` outcome for that case and is relaunched after it.

Outcome fields: `reference` is the same router on plain full tensors (rank 0); `sharded.outputs` hold
placements (R, S(d), P(op), _S(d,sf)), global_shape (rank 0's), rank_global_shapes, local_shapes, dtype and the
full values; `sharded.comms` stays []: the collectives are in `sharded.comm_counts` ({op: count} from
CommDebugMode during the router only); `sharded.error.message` is the first line of str(e) (the full text is in
`message_full`); `verdicts` is []; `pytorch` {version, git, ranks, notes}.
"""

import argparse
import glob
import json
import math
import os
import subprocess
import sys
import tempfile
import time

RULES_VENV = {"torch-2.12": "t2121", "torch-2.13": "t2130", "torch-2.14": "t2140", "torch-2.15": "t2150"}
OUTPUT_ORDER = ["topk_scores", "topk_ids", "scores", "routing_map", "counts", "group_mask"]


# ----------------------------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------------------------

def _case_files(paths):
    files = []
    for p in paths:
        if os.path.isdir(p):
            files.extend(sorted(glob.glob(os.path.join(p, "*.json"))))
        else:
            files.append(p)
    return files


def _crash_outcome(case, path, why):
    return {
        "format": "shardfuzz.outcome/1",
        "case": case,
        "reference": {"ok": True, "outputs": {}, "error": None},
        "sharded": {"ok": False, "outputs": {}, "comms": [], "comm_counts": {},
                    "error": {"kind": "WorkerCrash", "message": why}},
        "verdicts": [],
        "pytorch": {"version": None, "ranks": "one gloo process per rank", "notes": [why],
                    "case_file": os.path.basename(path)},
    }


def _run_group(python, world, items, args):
    """items: [(global_index, path, case)]. Returns {global_index: outcome}."""
    results = {}
    pending = list(items)
    failures = {}
    attempts = 0
    while pending:
        attempts += 1
        if attempts > 2 * len(items) + 5:
            for gi, path, case in pending:
                results[gi] = _crash_outcome(case, path, "too many relaunches")
            break
        with tempfile.TemporaryDirectory(prefix="router_oracle_") as td:
            lst = os.path.join(td, "cases.json")
            res = os.path.join(td, "results.jsonl")
            with open(lst, "w") as f:
                json.dump([[gi, path] for gi, path, _ in pending], f)
            open(res, "w").close()
            cmd = [python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(world),
                   os.path.abspath(__file__), "--worker", "--list", lst, "--results", res,
                   "--pg-timeout", str(args.pg_timeout)]
            env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
            t0 = time.time()
            try:
                p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   timeout=args.launch_timeout)
                rc, log = p.returncode, p.stdout.decode(errors="replace")
            except subprocess.TimeoutExpired as e:
                rc, log = "timeout", (e.stdout or b"").decode(errors="replace")
            done = set()
            aborted = False
            with open(res) as f:
                for line in f:
                    line = line.strip()
                    if not line:
                        continue
                    rec = json.loads(line)
                    results[rec["index"]] = rec["outcome"]
                    done.add(rec["index"])
                    aborted = aborted or rec.get("abort", False)
            sys.stderr.write(f"[router_oracle] {os.path.basename(python_dir(python))} world={world}: "
                             f"{len(done)}/{len(pending)} cases, rc={rc}, {time.time() - t0:.1f}s\n")
            if args.verbose or (rc not in (0, 3) and not done):
                sys.stderr.write(log[-4000:] + "\n")
            rest = [it for it in pending if it[0] not in done]
            if rest and not aborted:
                # the launch died on rest[0] (crash / hang): retry it once, then record it and skip it
                gi, path, case = rest[0]
                failures[gi] = failures.get(gi, 0) + 1
                sys.stderr.write(log[-3000:] + "\n")
                if failures[gi] > 1:
                    tail = " | ".join(l for l in log.strip().splitlines()[-3:])
                    results[gi] = _crash_outcome(case, path, f"launch ended (rc={rc}) without a result: {tail[-500:]}")
                    rest = rest[1:]
            pending = rest
    return results


def python_dir(python):
    return os.path.dirname(os.path.dirname(python))


def driver(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--out", help="write outcome lines here (default stdout)")
    ap.add_argument("--python", action="append", default=[], metavar="RULES=PYTHON",
                    help="interpreter for a revision.rules value, e.g. torch-2.13=/path/bin/python")
    ap.add_argument("--pg-timeout", type=float, default=300.0,
                    help="main gloo group timeout, seconds (sharding propagation on 3-D meshes can take tens of "
                         "seconds on a loaded machine, so keep it well above that)")
    ap.add_argument("--launch-timeout", type=float, default=1800.0)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)

    scratch = os.environ.get("SHARDFUZZ_SCRATCH", os.path.expanduser("~/.cache/shardfuzz-scratch"))
    pythons = {r: os.path.join(scratch, v, "bin", "python") for r, v in RULES_VENV.items()}
    for kv in args.python:
        k, v = kv.split("=", 1)
        pythons[k] = v

    files = _case_files(args.paths)
    cases = []
    groups = {}
    for gi, path in enumerate(files):
        with open(path) as f:
            case = json.load(f)
        cases.append((path, case))
        world = 1
        for s in case["mesh"]["shape"]:
            world *= int(s)
        groups.setdefault((case["revision"]["rules"], world), []).append((gi, path, case))

    results = {}
    for (rules, world), items in sorted(groups.items()):
        py = pythons.get(rules)
        if py is None or not os.path.exists(py):
            for gi, path, case in items:
                results[gi] = _crash_outcome(case, path, f"no torch interpreter for rules {rules!r}")
            continue
        results.update(_run_group(py, world, items, args))

    out = open(args.out, "w") if args.out else sys.stdout
    for gi in range(len(files)):
        out.write(json.dumps(results[gi]) + "\n")
    if args.out:
        out.close()


# ----------------------------------------------------------------------------------------------
# worker
# ----------------------------------------------------------------------------------------------

def worker(argv):
    import datetime

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch
    import torch.distributed as dist
    import torch.distributed.distributed_c10d as c10d
    import torch.nn.functional as F
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor
    from torch.distributed.tensor.debug import CommDebugMode
    from torch.distributed.tensor.experimental import local_map

    try:
        from torch.distributed.tensor.placement_types import _StridedShard
    except Exception:  # pragma: no cover
        _StridedShard = None
    from torch.distributed.tensor.debug import _clear_sharding_prop_cache

    torch.set_num_threads(1)
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--list", required=True)
    ap.add_argument("--results", required=True)
    ap.add_argument("--pg-timeout", type=float, default=300.0)
    args = ap.parse_args(argv)

    pg_timeout = datetime.timedelta(seconds=args.pg_timeout)
    # sub-groups created by init_device_mesh use the backend default timeout (30 min): shorten it
    c10d.default_pg_timeout = pg_timeout
    dist.init_process_group("gloo", timeout=pg_timeout)
    rank, world = dist.get_rank(), dist.get_world_size()
    ctrl = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=args.pg_timeout * 2 + 300))

    with open(args.list) as f:
        todo = json.load(f)

    DT = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16, "f64": torch.float64}
    DNAME = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16", torch.float64: "f64",
             torch.int64: "i64", torch.int32: "i32", torch.bool: "bool", torch.uint8: "u8"}
    NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}

    def parse_p(s):
        s = s.strip()
        if s == "R":
            return Replicate()
        if s.startswith("S(") and s.endswith(")"):
            return Shard(int(s[2:-1]))
        if s.startswith("P(") and s.endswith(")"):
            return Partial(s[2:-1])
        if s.startswith("_S(") and s.endswith(")"):
            d, sf = s[3:-1].split(",")
            return _StridedShard(int(d), split_factor=int(sf))
        raise ValueError(f"bad placement {s!r}")

    def pstr(p):
        if _StridedShard is not None and isinstance(p, _StridedShard):
            return f"_S({p.dim},{p.split_factor})"
        if isinstance(p, Shard):
            return f"S({p.dim})"
        if isinstance(p, Replicate):
            return "R"
        if isinstance(p, Partial):
            return f"P({p.reduce_op})"
        return repr(p)

    def coords_of(shape, r):
        c = []
        for d in range(len(shape)):
            prod = 1
            for s in shape[d + 1:]:
                prod *= s
            c.append((r // prod) % shape[d])
        return c

    meshes = {}

    def get_mesh(shape, names):
        key = (tuple(shape), tuple(names))
        if key not in meshes:
            meshes[key] = init_device_mesh("cpu", tuple(shape), mesh_dim_names=tuple(names))
        return meshes[key]

    def tensor_of(spec, dtype):
        vals = [NONFINITE[v] if isinstance(v, str) else float(v) for v in spec["values"]]
        return torch.tensor(vals, dtype=torch.float64).reshape(spec["shape"]).to(dtype)

    # ---- the router (T21 moe.py math; scatter sites per revision.router) --------------------
    def site(how, t, idx, value, placements_of):
        """One scatter site: t.scatter_(-1, idx, value) as the revision writes it."""
        if how == "inplace":
            return t.scatter_(-1, idx, value)
        if how == "out_of_place":
            return t.scatter(-1, idx, value)
        raise AssertionError(how)

    def router(case, x, gate, bias, gate_bias=None):
        r, d = case["router"], case["dims"]
        rev = case["revision"]["router"]
        E, K = int(d["experts"]), int(d["top_k"])
        site1, site2 = {
            "inplace_scatter": ("inplace", "inplace"),
            "out_of_place_scatter": ("out_of_place", "out_of_place"),
            "local_map_counts": ("inplace", "local_map"),
            "local_map_both": ("local_map", "local_map"),
        }[rev]
        out = {}
        if x.dtype != torch.float32:
            x = x.float()
        if gate.dtype != torch.float32:
            gate = gate.float()
        if gate_bias is not None and gate_bias.dtype != torch.float32:
            gate_bias = gate_bias.float()
        scores = F.linear(x, gate, gate_bias)
        if r["score_func"] == "sigmoid":
            scores = torch.sigmoid(scores)
        elif r["score_func"] == "softmax":
            scores = scores.softmax(dim=-1)
        else:
            raise NotImplementedError(f"Unknown score function {r['score_func']}")
        choice = scores + bias if bias is not None else scores
        group_mask = None
        if r.get("groups"):
            G, Gk = int(r["groups"]["num_groups"]), int(r["groups"]["num_limited"])
            P = E // G
            g = choice.unflatten(-1, (G, P))
            top2 = g.topk(2, dim=-1).values
            gs = top2.sum(dim=-1)
            gidx = torch.topk(gs, k=Gk, dim=-1, sorted=False).indices
            mask = torch.ones_like(gs, dtype=torch.bool)
            if site1 == "local_map" and isinstance(mask, DTensor):
                mask = local_map(lambda m, i: m.scatter_(-1, i, False),
                                 in_placements=(mask.placements, gidx.placements if isinstance(gidx, DTensor) else None),
                                 out_placements=(mask.placements,),
                                 device_mesh=mask.device_mesh)(mask, gidx)
            elif site1 == "local_map":
                mask = mask.scatter_(-1, gidx, False)
            else:
                mask = site(site1, mask, gidx, False, mask)
            group_mask = mask
            choice = g.masked_fill(mask.unsqueeze(-1), float("-inf")).flatten(-2)
        ids = torch.topk(choice, k=K, dim=-1, sorted=False).indices
        ts = scores.gather(dim=-1, index=ids)
        if r.get("force_load_balance"):
            B, L = int(scores.shape[0]), int(scores.shape[1])
            ids = torch.arange(B * L * K, dtype=torch.int64).reshape(B, L, K) % E
            ts = scores.gather(-1, ids)
        if r.get("route_norm"):
            ts = ts / (ts.sum(dim=-1, keepdim=True) + 1e-20)
        ts = ts * r.get("route_scale", 1.0)
        out["topk_scores"] = ts
        out["topk_ids"] = ids
        out["scores"] = scores
        if site2 == "local_map":
            fn = lambda s, i: torch.zeros_like(s, dtype=torch.bool).scatter_(-1, i, True)  # noqa: E731
            if isinstance(scores, DTensor):
                rm = local_map(fn, in_placements=(scores.placements, ids.placements if isinstance(ids, DTensor) else None),
                               out_placements=(scores.placements,),
                               device_mesh=scores.device_mesh)(scores, ids)
            else:
                rm = fn(scores, ids)
        else:
            rm = site(site2, torch.zeros_like(scores, dtype=torch.bool), ids, True, scores)
        out["routing_map"] = rm
        out["counts"] = rm.sum(dim=(0, 1))
        if group_mask is not None:
            out["group_mask"] = group_mask
        return out

    # ---- serialising values ------------------------------------------------------------------
    def values_of(t):
        t = t.detach().contiguous().reshape(-1)
        if t.dtype == torch.bool:
            return [bool(v) for v in t.tolist()]
        if not t.dtype.is_floating_point:
            return [int(v) for v in t.tolist()]
        import numpy as np
        if t.dtype in (torch.float16, torch.bfloat16):
            t = t.float()
        arr = t.numpy()
        res = []
        for v in arr:
            if math.isnan(v):
                res.append("NaN")
            elif math.isinf(v):
                res.append("Infinity" if v > 0 else "-Infinity")
            elif arr.dtype == np.float32:
                res.append(float(str(np.float32(v))))
            else:
                res.append(float(v))
        return res

    def rebuild(locals_, placements, mesh_shape):
        """Full value from every rank's local shard (chunk nesting, mesh dims left to right, so the
        innermost mesh dim is undone first)."""
        cur = {tuple(coords_of(mesh_shape, r)): t for r, t in enumerate(locals_)}
        for md in reversed(range(len(mesh_shape))):
            p = placements[md]
            grouped = {}
            for c, t in cur.items():
                grouped.setdefault(c[:md], []).append((c[md], t))
            new = {}
            for key, lst in grouped.items():
                ts = [t for _, t in sorted(lst, key=lambda a: a[0])]
                if _StridedShard is not None and isinstance(p, _StridedShard):
                    raise NotImplementedError("rebuild of _StridedShard")
                if isinstance(p, Shard):
                    v = torch.cat(ts, dim=p.dim)
                elif isinstance(p, Partial):
                    st = torch.stack(ts)
                    op = p.reduce_op
                    if op == "sum":
                        v = st.sum(0).to(ts[0].dtype)
                    elif op == "avg":
                        v = st.double().mean(0).to(ts[0].dtype)
                    elif op == "max":
                        v = st.amax(0)
                    else:
                        v = st.amin(0)
                else:
                    v = ts[0]
                new[key] = v
            cur = new
        return cur[()]

    def describe_local(t, mesh_ndim):
        if isinstance(t, DTensor):
            loc = t.to_local()
            if hasattr(loc, "wait"):  # AsyncCollectiveTensor
                loc = loc.wait()
            loc = loc.detach().clone()
            return {"placements": [pstr(p) for p in t.placements], "shape": [int(s) for s in t.shape],
                    "local_shape": [int(s) for s in loc.shape], "dtype": DNAME.get(t.dtype, str(t.dtype)),
                    "local": loc, "plain": False}
        return {"placements": ["R"] * mesh_ndim, "shape": [int(s) for s in t.shape],
                "local_shape": [int(s) for s in t.shape], "dtype": DNAME.get(t.dtype, str(t.dtype)),
                "local": t.detach().clone(), "plain": True}

    def err_of(e):
        s = str(e)
        return {"kind": type(e).__name__, "message": s.split("\n")[0], "message_full": s}

    def is_timeout(e):
        name = type(e).__name__
        s = str(e).lower()
        return name == "DistBackendError" or "timed out" in s or "timeout" in s and "gloo" in s

    def comm_counts(cm):
        return {str(k): int(v) for k, v in cm.get_comm_counts().items() if v}

    def write(line):
        if rank == 0:
            with open(args.results, "a") as f:
                f.write(json.dumps(line) + "\n")

    torch_meta = {"version": torch.__version__, "git": torch.version.git_version,
                  "ranks": "one gloo process per rank"}

    for gi, path in todo:
        with open(path) as f:
            case = json.load(f)
        notes = []
        trace = None
        mesh_shape = [int(s) for s in case["mesh"]["shape"]]
        names = case["mesh"]["names"]
        assert world == math.prod(mesh_shape), (world, mesh_shape)
        # Each case must see fresh sharding-propagation caches: their key leaves out non-tensor args before
        # the op's static_argnum (e.g. topk's k, RuntimeSchemaInfo(2)), so a cached output spec of an earlier
        # case with the same input spec but another k would give topk outputs a wrong global shape.
        # (This makes 3-D-mesh cases slow: redistribute costs are recomputed per case.)
        _clear_sharding_prop_cache()

        # -- inputs (plain, full)
        tens = case["tensors"]
        x_full = tensor_of(tens["x"], DT[tens["x"].get("dtype", case["dtype"])])
        g_full = tensor_of(tens["gate"], DT[tens["gate"].get("dtype", case["dtype"])])
        b_full = None
        if case["router"].get("expert_bias"):
            b_full = tensor_of(tens["expert_bias"], torch.float32)
        gb_full = None
        if case["router"].get("gate_bias"):
            gb_full = tensor_of(tens["gate_bias"], DT[tens["gate_bias"].get("dtype", case["dtype"])])

        # -- sharded run
        status = {"rank": rank, "ok": False, "error": None, "timed_out": False, "comms": {}, "outs": {}}
        mesh = None
        try:
            mesh = get_mesh(mesh_shape, names)

            def place(full, pl):
                return distribute_tensor(full.contiguous(), mesh, [parse_p(s) for s in pl])

            lay = case["layout"]
            x = place(x_full, lay["x"])
            gate = place(g_full, lay["gate"])
            bias = place(b_full, lay["expert_bias"]) if b_full is not None else None
            gbias = place(gb_full, lay["gate_bias"]) if gb_full is not None else None
            cm = CommDebugMode()
            dm = None
            if os.environ.get("ROUTER_ORACLE_TRACE"):  # debugging aid: DTensor op trace of rank 0
                from torch.utils._debug_mode import DebugMode
                dm = DebugMode(record_torchfunction=False)
            try:
                if dm is not None:
                    with cm, dm:
                        outs = router(case, x, gate, bias, gbias)
                else:
                    with cm:
                        outs = router(case, x, gate, bias, gbias)
            finally:
                status["comms"] = comm_counts(cm)
                if dm is not None and rank == 0:
                    trace = dm.debug_string()
            status["outs"] = {k: describe_local(v, len(mesh_shape)) for k, v in outs.items()}
            status["ok"] = True
        except Exception as e:  # noqa: BLE001
            status["error"] = err_of(e)
            status["timed_out"] = is_timeout(e)
            outs = None
            if os.environ.get("ROUTER_ORACLE_TB"):
                import traceback
                sys.stderr.write(f"rank {rank} case {os.path.basename(path)}:\n{traceback.format_exc()}\n")

        all_status = [None] * world
        try:
            dist.all_gather_object(all_status, status, group=ctrl)
        except Exception as e:  # control group broken: nothing more can be agreed on
            sys.stderr.write(f"rank {rank}: control exchange failed on case {gi}: {e}\n")
            os._exit(4)

        diverged = any(s["timed_out"] for s in all_status) or any(s["comms"] != all_status[0]["comms"] for s in all_status)
        all_ok = all(s["ok"] for s in all_status)
        sharded = {"ok": all_ok, "outputs": {}, "comms": [], "comm_counts": all_status[0]["comms"], "error": None}
        if any(s["comms"] != all_status[0]["comms"] for s in all_status):
            sharded["rank_comm_counts"] = [s["comms"] for s in all_status]
        if not all_ok:
            first = next(s for s in all_status if not s["ok"])
            sharded["error"] = {k: first["error"][k] for k in ("kind", "message")}
            sharded["error"]["message_full"] = first["error"]["message_full"]
            errs = [s["error"] for s in all_status]
            if any(e is None or e["kind"] != errs[0]["kind"] or e["message_full"] != errs[0]["message_full"]
                   for e in errs):
                sharded["rank_errors"] = [None if e is None else {"kind": e["kind"], "message": e["message"]}
                                          for e in errs]
                notes.append("ranks differ in their error")
        if diverged:
            notes.append("ranks diverged (timeout or different collectives): process group abandoned, "
                         "remaining cases relaunched")
        if all_ok and not diverged:
            for name in OUTPUT_ORDER:
                if name not in all_status[0]["outs"]:
                    continue
                per = [s["outs"][name] for s in all_status]
                d0 = per[0]
                rec = {"placements": d0["placements"], "global_shape": d0["shape"],
                       "rank_global_shapes": [p["shape"] for p in per],
                       "local_shapes": [p["local_shape"] for p in per], "dtype": d0["dtype"]}
                if d0["plain"]:
                    rec["plain_tensor"] = True
                    notes.append(f"{name}: a plain torch.Tensor (not a DTensor)")
                same = all(p["shape"] == d0["shape"] for p in per) and all(p["placements"] == d0["placements"] for p in per)
                t = outs[name]
                if same and isinstance(t, DTensor):
                    full = t.full_tensor()
                elif same:
                    full = t
                else:
                    notes.append(f"{name}: ranks infer different global shapes {rec['rank_global_shapes']}; "
                                 "full value rebuilt from the local shards (full_tensor() not called)")
                    try:
                        full = rebuild([p["local"] for p in per], [parse_p(s) for s in d0["placements"]], mesh_shape)
                    except Exception as e:  # noqa: BLE001
                        full = None
                        notes.append(f"{name}: rebuild failed: {e}")
                rec["values"] = values_of(full) if full is not None else None
                sharded["outputs"][name] = rec

        # -- reference: the same code on plain full tensors (rank 0 only; no collectives)
        reference = {"ok": True, "outputs": {}, "error": None}
        if rank == 0:
            try:
                ref = router(case, x_full, g_full, b_full, gb_full)
                for name in OUTPUT_ORDER:
                    if name in ref:
                        t = ref[name]
                        reference["outputs"][name] = {"shape": list(t.shape), "dtype": DNAME.get(t.dtype, str(t.dtype)),
                                                      "values": values_of(t)}
            except Exception as e:  # noqa: BLE001
                reference = {"ok": False, "outputs": {}, "error": {k: err_of(e)[k] for k in ("kind", "message")}}

        outcome = {"format": "shardfuzz.outcome/1", "case": case, "reference": reference, "sharded": sharded,
                   "verdicts": [], "pytorch": dict(torch_meta, notes=notes, case_file=os.path.basename(path))}
        if trace is not None:
            outcome["pytorch"]["trace"] = trace
        write({"index": gi, "outcome": outcome, "abort": bool(diverged)})
        if diverged:
            sys.stdout.flush()
            os._exit(3)

    dist.barrier(group=ctrl)
    dist.destroy_process_group()


if __name__ == "__main__":
    if "--worker" in sys.argv[1:]:
        worker(sys.argv[1:])
    else:
        driver(sys.argv[1:])
