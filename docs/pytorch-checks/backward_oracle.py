#!/usr/bin/env python3
"""backward_oracle.py: run shardfuzz BACKWARD cases on REAL PyTorch DTensor (one gloo process per rank).

Reads backward case files (format shardfuzz.case/1 with a `backward` object, tensors inline; a .json file holds one
case, a .jsonl file one case per line, a directory its *.json / *.jsonl files) and writes one outcome line per case,
in input order:

    python3 backward_oracle.py [--out FILE.jsonl] [--python RULES=PYTHON ...] [--trace-dir DIR] CASES ...
    python3 backward_oracle.py --self-check          # the splitmix64 / V / share formula (no torch needed)

The contract is /work/main/docs/backward.md ("the boundary programs", "the loss"). This script implements it on
real DTensor; it does not decide what is right or wrong, it records what torch does.

Driver (any python, torch not needed): groups the cases by (revision.rules, tp = mesh.shape[0]) and runs each group
in ONE launch of `python -m torch.distributed.run --standalone --nproc_per_node tp`, with the interpreter of the
matching torch: torch-2.12 -> $SHARDFUZZ_SCRATCH/t2121, torch-2.13 -> t2130, torch-2.14 -> t2140, torch-2.15 -> t2150 (SHARDFUZZ_SCRATCH
defaults to ~/.cache/shardfuzz-scratch; override per rule set with --python torch-2.13=/path/bin/python).

Worker (one CPU gloo process per rank, persistent over the group's cases), per case:
  0. clear DTensor's sharding-propagation caches (Python `_clear_sharding_prop_cache` and, where it exists,
     torch._C._clear_DTensor_sharding_propagator_cache()): their keys omit some non-tensor args (topk's k);
  1. leaves: x_in (B,L,D) in the case dtype, a DTensor S(1) (backward.sp) or R built with DTensor.from_local of this
     rank's torch.chunk piece (shape/stride given) and requires_grad_(); W (E,D) and b (E,) (router.gate_bias) R
     DTensors that require grad; expert_bias a plain float32 tensor per rank (a buffer, no grad; wrapped as an R
     DTensor with from_local where the router runs on DTensors, as torchtitan does);
  2. the forward of the boundary program (`program` below, one function per boundary of docs/backward.md);
  3. this rank's local loss L_r = sum_{t,k} ts_r[t,k] * V_r[t, ids_r[t,k]] (V_r per loss class, see `loss_class`);
     L_r.backward() (a plain scalar per rank: the true loss is sum_r L_r), under CommDebugMode (backward only);
  4. every rank's status and local gradients are exchanged over a separate gloo "control" group; rank 0 writes
     the outcome line: placements, per-rank locals, the reduced gradient (sum over P (in float64, rounded once to
     the gradient dtype), torch.chunk concatenation over S / _StridedShard, rank 0 over R even when the R locals
     differ), backward comm counts, and the reference (torch autograd on the plain unsharded router).
Lockstep: as router_oracle.py. If ranks diverge (a rank timed out, or the ranks issued different collectives), rank 0
records the case with the lowest failing rank's error, all ranks exit 3 and the driver relaunches from the next case.

Gate dtype: for bf16/f16 cases the gate Linear runs on x.float(), W.float(), b.float() (torchtitan's
`torch.autocast(dtype=float32)` around the gate since #3192, router.md section 2 step 1, and router_oracle.py's
forward convention); logits are float32 so the `logits.float()` of docs/backward.md is a no-op. Gradients of W, b and
x come back in the case dtype through the casts' backward. The reference does exactly the same.

tt-3192 with EP on, gate input (site gate.input): torch's SequenceParallel(sequence_dim=0, use_local_output=False)
_prepare_input_fn [torch/distributed/tensor/parallel/style.py L400-418 in 2.12.1, 2.13.0 and 2.14.0, identical]:
a DTensor input whose placements != (Shard(0),) is redistributed with
`input_tensor.redistribute(placements=(Shard(0),), async_op=True)`; a DTensor already (Shard(0),) passes unchanged
(a plain tensor would be wrapped with from_local(S(0))). The gate's parameters are made R with from_local
(_replicate_module_fn). Its output stays a DTensor (use_local_output=False). Here x_in.view(T, D) is S(1)-derived
(_StridedShard(0, split_factor=B) for B > 1, Shard(0) for B == 1) or R, so the redistribute runs unless B == 1 and sp.

Errors: an exception in the forward or backward is recorded as backward.error = {kind: class name, message: first
line of str(e)}. The tokensplit class reproduces torchtitan's ReordererSequenceParallel check
[TTPRE torchtitan/distributed/expert_parallel.py L275-281]:
ValueError("Uneven split of tokens of is not supported yet. Requires EP degree dividing batch size * seq len.").

Outcome line: {"format": "shardfuzz.outcome/1", "case", "pytorch": {version, git, engine: "gloo"},
"backward": {ok, error, loss_class, grads: {"gate.weight", "gate.bias"?, "x": {placements, shape, dtype,
locals: [{shape, values}] per rank, reduced}}, reference: {name: {shape, dtype, values}}, comm_counts, comms: [{op,
mesh_dim, bytes}] in issue order, bytes the largest result over the ranks}}.
Floats are JSON numbers that read back bit-exact in the tensor's dtype; NaN/inf are "NaN", "Infinity", "-Infinity".
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

BOUNDARIES = ("tt-pre2416", "tt-pr2388", "tt-2416", "tt-3192", "tt-clean", "tt-3654")
LOCAL_ROUTE = ("tt-pre2416", "tt-pr2388", "tt-2416")  # router body on local tensors (tt-3192 too with EP off)
UNEVEN_MSG = "Uneven split of tokens of is not supported yet. Requires EP degree dividing batch size * seq len."

# ----------------------------------------------------------------------------------------------
# the loss weights (docs/backward.md "The loss"); pure Python, exact
# ----------------------------------------------------------------------------------------------
M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
STREAM = 0xD1B54A32D192ED03


def splitmix64(z):
    z = (z + GOLDEN) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def u(loss_seed, s, i):
    return splitmix64((loss_seed + s * STREAM + i) & M64)


def weight(loss_seed, s, i):
    return ((u(loss_seed, s, i) % 129) - 64) / 64.0


def v_rows(loss_seed, T, E):
    """V as a list of T rows of E floats (multiples of 1/64 in [-1, 1])."""
    return [[weight(loss_seed, 0, t * E + e) for e in range(E)] for t in range(T)]


def share_rows(loss_seed, T, E, n):
    """[A_0, ..., A_{n-1}], each T rows of E floats; sum_r A_r == V exactly."""
    V = v_rows(loss_seed, T, E)
    A = [[[weight(loss_seed, 1 + r, t * E + e) for e in range(E)] for t in range(T)] for r in range(n - 1)]
    last = [[V[t][e] - sum(A[r][t][e] for r in range(n - 1)) for e in range(E)] for t in range(T)]
    return A + [last]


def loss_class(bw, n):
    """tokensplit | local | replicated | partial (docs/backward.md table). `replicated` covers tt-pre2416 and
    tt-pr2388 (both keep #1878's all-reduce of the experts' input gradient; #2416 reverted it)."""
    b, ep, etp, sbe = bw["boundary"], bool(bw["ep"]), int(bw["etp"]), bool(bw["score_before_experts"])
    if ep and b in ("tt-3192", "tt-clean", "tt-3654"):
        return "local"
    if ep and etp == 1 and n > 1 and b in LOCAL_ROUTE:
        return "tokensplit"
    if sbe and b in ("tt-pre2416", "tt-pr2388"):
        return "replicated"
    return "partial"


def rank_weights(loss_seed, T, E, n, cls, r):
    """V_r (T rows of E) in global token order for rank r; raises torchtitan's ValueError for an uneven
    tokensplit."""
    if cls == "partial":
        return share_rows(loss_seed, T, E, n)[r]
    V = v_rows(loss_seed, T, E)
    if cls == "tokensplit":
        if T % n != 0:
            raise ValueError(UNEVEN_MSG)
        lo, hi = r * (T // n), (r + 1) * (T // n)
        return [row if lo <= t < hi else [0.0] * E for t, row in enumerate(V)]
    return V  # local (the rank picks its own token rows) / replicated


def self_check():
    # Vigna's splitmix64.c seeded with 0 outputs e220a8397b1dcdaf, 6e789e6aa1b965f4, 06c45d188009454f: its state is
    # advanced by GOLDEN before mixing, i.e. output k = splitmix64(k * GOLDEN) with our definition.
    assert splitmix64(0) == 0xE220A8397B1DCDAF, hex(splitmix64(0))
    assert splitmix64(GOLDEN) == 0x6E789E6AA1B965F4
    assert splitmix64((2 * GOLDEN) & M64) == 0x06C45D188009454F
    # u wraps mod 2^64
    assert u(M64, 0, 1) == splitmix64(0)
    assert u(5, 2, 7) == splitmix64((5 + 2 * STREAM + 7) & M64)
    V = v_rows(12345, 5, 8)
    vals = [v for row in V for v in row]
    assert all(-1.0 <= v <= 1.0 and v * 64 == int(v * 64) for v in vals)
    assert len(set(vals)) > 20
    for n in (1, 2, 3, 4):
        A = share_rows(12345, 5, 8, n)
        for t in range(5):
            for e in range(8):
                assert sum(A[r][t][e] for r in range(n)) == V[t][e]
                assert all(A[r][t][e] * 64 == int(A[r][t][e] * 64) for r in range(n))
        if n > 1:
            assert A[0] != V
    # exactness in float32: multiples of 1/64 with |v| <= n sum exactly
    import struct
    for v in vals:
        assert struct.unpack("f", struct.pack("f", v))[0] == v
    print("self-check ok: splitmix64 test vectors, V in {k/64}, shares sum to V exactly")
    print("V[0][:8] for loss_seed=12345:", V[0])


# ----------------------------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------------------------

def load_cases(paths):
    cases = []
    for p in paths:
        files = sorted(glob.glob(os.path.join(p, "*.json")) + glob.glob(os.path.join(p, "*.jsonl"))) \
            if os.path.isdir(p) else [p]
        for f in files:
            with open(f) as fh:
                text = fh.read()
            if f.endswith(".jsonl"):
                for ln, line in enumerate(text.splitlines()):
                    if line.strip():
                        cases.append((f"{os.path.basename(f)}:{ln + 1}", json.loads(line)))
            else:
                cases.append((os.path.basename(f), json.loads(text)))
    return cases


def crash_outcome(case, why):
    n = int(case["mesh"]["shape"][0])
    return {"format": "shardfuzz.outcome/1", "case": case,
            "pytorch": {"version": None, "git": None, "engine": "gloo"},
            "backward": {"ok": False, "error": {"kind": "WorkerCrash", "message": why},
                         "loss_class": loss_class(case["backward"], n), "grads": {}, "reference": {},
                         "comm_counts": {}}}


def run_group(python, world, items, args):
    """items: [(global_index, label, case)]. Returns {global_index: outcome}."""
    results, failures, pending, attempts = {}, {}, list(items), 0
    while pending:
        attempts += 1
        if attempts > 2 * len(items) + 5:
            for gi, _, case in pending:
                results[gi] = crash_outcome(case, "too many relaunches")
            break
        with tempfile.TemporaryDirectory(prefix="backward_oracle_") as td:
            lst, res = os.path.join(td, "cases.json"), os.path.join(td, "results.jsonl")
            with open(lst, "w") as f:
                json.dump([[gi, case] for gi, _, case in pending], f)
            open(res, "w").close()
            cmd = [python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(world),
                   os.path.abspath(__file__), "--worker", "--list", lst, "--results", res,
                   "--pg-timeout", str(args.pg_timeout)]
            if args.trace_dir:
                cmd += ["--trace-dir", os.path.abspath(args.trace_dir)]
            env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
            t0 = time.time()
            try:
                p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   timeout=args.launch_timeout)
                rc, log = p.returncode, p.stdout.decode(errors="replace")
            except subprocess.TimeoutExpired as e:
                rc, log = "timeout", (e.stdout or b"").decode(errors="replace")
            done, aborted = set(), False
            with open(res) as f:
                for line in f:
                    if line.strip():
                        rec = json.loads(line)
                        results[rec["index"]] = rec["outcome"]
                        done.add(rec["index"])
                        aborted = aborted or rec.get("abort", False)
            sys.stderr.write(f"[backward_oracle] {python} world={world}: {len(done)}/{len(pending)} cases, "
                             f"rc={rc}, {time.time() - t0:.1f}s\n")
            if args.verbose or (rc not in (0, 3) and not done):
                sys.stderr.write(log[-4000:] + "\n")
            rest = [it for it in pending if it[0] not in done]
            if rest and not aborted:
                gi, _, case = rest[0]
                failures[gi] = failures.get(gi, 0) + 1
                sys.stderr.write(log[-3000:] + "\n")
                if failures[gi] > 1:
                    tail = " | ".join(log.strip().splitlines()[-3:])
                    results[gi] = crash_outcome(case, f"launch ended (rc={rc}) without a result: {tail[-500:]}")
                    rest = rest[1:]
            pending = rest
    return results


def driver(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--out", help="write outcome lines here (default stdout)")
    ap.add_argument("--python", action="append", default=[], metavar="RULES=PYTHON")
    ap.add_argument("--pg-timeout", type=float, default=120.0)
    ap.add_argument("--launch-timeout", type=float, default=3600.0)
    ap.add_argument("--trace-dir", help="write rank 0's DebugMode trace (forward + backward) of each case to "
                                        "DIR/<torch version>-<boundary>-ep<0|1>.txt")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)

    scratch = os.environ.get("SHARDFUZZ_SCRATCH", os.path.expanduser("~/.cache/shardfuzz-scratch"))
    pythons = {r: os.path.join(scratch, v, "bin", "python") for r, v in RULES_VENV.items()}
    for kv in args.python:
        k, v = kv.split("=", 1)
        pythons[k] = v
    cases = load_cases(args.paths)
    groups = {}
    for gi, (label, case) in enumerate(cases):
        world = math.prod(int(s) for s in case["mesh"]["shape"])
        groups.setdefault((case["revision"]["rules"], world), []).append((gi, label, case))
    results = {}
    for (rules, world), items in sorted(groups.items()):
        py = pythons.get(rules)
        if py is None or not os.path.exists(py):
            for gi, _, case in items:
                results[gi] = crash_outcome(case, f"no torch interpreter for rules {rules!r}")
            continue
        results.update(run_group(py, world, items, args))
    out = open(args.out, "w") if args.out else sys.stdout
    for gi in range(len(cases)):
        out.write(json.dumps(results[gi]) + "\n")
    if args.out:
        out.close()


# ----------------------------------------------------------------------------------------------
# worker
# ----------------------------------------------------------------------------------------------

def worker(argv):
    import datetime

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import numpy as np
    import torch
    import torch.distributed as dist
    import torch.distributed.distributed_c10d as c10d
    import torch.nn.functional as F
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Partial, Replicate, Shard
    from torch.distributed.tensor.debug import CommDebugMode
    from torch.distributed.tensor.experimental import local_map

    try:
        from torch.distributed.tensor.placement_types import _StridedShard
    except Exception:  # pragma: no cover
        _StridedShard = None
    try:
        from torch.distributed.tensor.debug import _clear_sharding_prop_cache
    except Exception:  # pragma: no cover
        _clear_sharding_prop_cache = None

    torch.set_num_threads(1)
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--list", required=True)
    ap.add_argument("--results", required=True)
    ap.add_argument("--pg-timeout", type=float, default=120.0)
    ap.add_argument("--trace-dir")
    args = ap.parse_args(argv)

    pg_timeout = datetime.timedelta(seconds=args.pg_timeout)
    c10d.default_pg_timeout = pg_timeout
    dist.init_process_group("gloo", timeout=pg_timeout)
    rank, world = dist.get_rank(), dist.get_world_size()
    ctrl = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=args.pg_timeout * 2 + 300))
    with open(args.list) as f:
        todo = json.load(f)

    R, P, S = Replicate(), Partial(), Shard
    DT = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16, "f64": torch.float64}
    DNAME = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16", torch.float64: "f64",
             torch.int64: "i64"}
    NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}

    def clear_caches():
        if _clear_sharding_prop_cache is not None:
            _clear_sharding_prop_cache()
        if hasattr(torch._C, "_clear_DTensor_sharding_propagator_cache"):
            torch._C._clear_DTensor_sharding_propagator_cache()

    def is_strided(p):
        return _StridedShard is not None and isinstance(p, _StridedShard)

    def pstr(p):
        if is_strided(p):
            return f"_S({p.dim},{p.split_factor})"
        if isinstance(p, Shard):
            return f"S({p.dim})"
        if isinstance(p, Replicate):
            return "R"
        if isinstance(p, Partial):
            return f"P({p.reduce_op})"
        return repr(p)

    def chunk(t, n, k, dim):
        ch = list(torch.chunk(t, n, dim=dim))
        if k < len(ch):
            return ch[k]
        shp = list(t.shape)
        shp[dim] = 0
        return t.new_empty(shp)

    def local_of(full, p, n, k):
        """Rank k's piece of `full` under placement p on a 1-D mesh of n (torch.chunk semantics)."""
        if is_strided(p):
            d = p.dim % full.ndim
            pieces = torch.chunk(full, p.split_factor, dim=d)
            return torch.cat([chunk(pc, n, k, d) for pc in pieces], dim=d).contiguous()
        if isinstance(p, Shard):
            return chunk(full, n, k, p.dim % full.ndim).contiguous()
        return full.contiguous()

    def contiguous_stride(shape):
        st, acc = [], 1
        for s in reversed(shape):
            st.append(acc)
            acc *= s
        return tuple(reversed(st))

    def tensor_of(spec, dtype):
        vals = [NONFINITE[v] if isinstance(v, str) else float(v) for v in spec["values"]]
        return torch.tensor(vals, dtype=torch.float64).reshape(spec["shape"]).to(dtype)

    def values_of(t):
        t = t.detach().contiguous().reshape(-1)
        if not t.dtype.is_floating_point:
            return [int(v) for v in t.tolist()]
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

    def err_of(e):
        s = str(e)
        return {"kind": type(e).__name__, "message": s.split("\n")[0], "message_full": s}

    def is_timeout(e):
        s = str(e).lower()
        return type(e).__name__ == "DistBackendError" or "timed out" in s or ("timeout" in s and "gloo" in s)

    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils import _pytree as pytree

    class PlacementLog(TorchDispatchMode):
        """Trace aid: one line per op that sees a DTensor, with input and output placements (the mode sits above
        DTensor's dispatch, so the local ops DTensor runs underneath are not logged here)."""

        def __init__(self):
            super().__init__()
            self.lines = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)

            def desc(a):
                if isinstance(a, DTensor):
                    return f"{DNAME.get(a.dtype, a.dtype)}{list(a.shape)}|{','.join(pstr(p) for p in a.placements)}"
                if isinstance(a, torch.Tensor):
                    return f"plain {DNAME.get(a.dtype, a.dtype)}{list(a.shape)}"
                if isinstance(a, (list, tuple)):
                    return "(" + ", ".join(desc(x) for x in a) + ")"
                return repr(a)

            if any(isinstance(a, DTensor) for a in pytree.tree_leaves((args, kwargs, out))):
                kw = "".join(f", {k}={desc(v)}" for k, v in kwargs.items())
                self.lines.append(f"{func}({', '.join(desc(a) for a in args)}{kw}) -> {desc(out)}")
            return out

    FUNCOL = {"all_gather_into_tensor": "all_gather", "reduce_scatter_tensor": "reduce_scatter",
              "all_reduce": "all_reduce", "all_to_all_single": "all_to_all"}

    class CollectiveLog(TorchDispatchMode):
        """One record per functional collective the backward issues underneath DTensor: {op, mesh_dim, bytes},
        bytes being the size of this rank's result (the driver keeps the largest over ranks, as shardfuzz logs it).
        Backward meshes are 1-D, so every collective runs on mesh dim 0."""

        def __init__(self):
            super().__init__()
            self.records = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if any(t is DTensor or issubclass(t, DTensor) for t in types):
                return NotImplemented
            out = func(*args, **kwargs)
            packet = getattr(func, "_overloadpacket", None)
            ns = getattr(packet, "_qualified_op_name", "").split("::")[0]
            name = getattr(packet, "__name__", "")
            if ns in ("_c10d_functional", "c10d_functional") and name in FUNCOL and isinstance(out, torch.Tensor):
                self.records.append({"op": FUNCOL[name], "mesh_dim": 0,
                                     "bytes": int(out.numel() * out.element_size())})
            return out

    mesh = init_device_mesh("cpu", (world,), mesh_dim_names=("tp",))
    torch_meta = {"version": torch.__version__, "git": torch.version.git_version, "engine": "gloo"}

    # ---- the router body (docs/backward.md; torchtitan TokenChoiceTopKRouter.forward) -----------------------
    def route(case, logits, eb):
        """logits: (.., E) float32 tensor or DTensor; eb: expert_bias (same kind) or None. Returns (ts, ids)."""
        r, d = case["router"], case["dims"]
        E, K = int(d["experts"]), int(d["top_k"])
        logits = logits.float()
        if r["score_func"] == "sigmoid":
            scores = torch.sigmoid(logits)
        elif r["score_func"] == "softmax":
            scores = F.softmax(logits, dim=-1)
        else:
            raise NotImplementedError(f"Unknown score function {r['score_func']}")
        choice = scores if eb is None else scores + eb
        if r.get("groups"):
            G, Gk = int(r["groups"]["num_groups"]), int(r["groups"]["num_limited"])
            g = choice.unflatten(-1, (G, E // G))
            gs = g.topk(2, dim=-1).values.sum(dim=-1)
            gidx = torch.topk(gs, k=Gk, dim=-1, sorted=False).indices
            mask = torch.ones_like(gs, dtype=torch.bool)
            how = {"inplace_scatter": "inplace", "out_of_place_scatter": "out_of_place",
                   "local_map_counts": "inplace", "local_map_both": "local_map"}[case["revision"]["router"]]
            if how == "local_map" and isinstance(mask, DTensor):
                mask = local_map(lambda m, i: m.scatter_(-1, i, False),
                                 out_placements=(mask.placements,),
                                 in_placements=(mask.placements, gidx.placements),
                                 device_mesh=mask.device_mesh)(mask, gidx)
            elif how == "out_of_place":
                mask = mask.scatter(-1, gidx, False)
            else:
                mask = mask.scatter_(-1, gidx, False)
            choice = g.masked_fill(mask.unsqueeze(-1), float("-inf")).flatten(-2)
        ids = torch.topk(choice, k=K, dim=-1, sorted=False).indices
        ts = scores.gather(dim=-1, index=ids)
        if r.get("route_norm"):
            ts = ts / (ts.sum(dim=-1, keepdim=True) + 1e-20)
        ts = ts * float(r.get("route_scale", 1.0))
        return ts, ids

    def gate(xg, W, b):
        """The gate Linear on float32 operands (see the module docstring)."""
        return F.linear(xg.float(), W.float(), None if b is None else b.float())

    def local_loss(ts_l, ids_l, tok_l, Vr):
        """sum_{t,k} ts_l[t,k] * Vr[tok[t], ids_l[t,k]] for this rank's local gate values."""
        w = Vr[tok_l.reshape(-1)].reshape(*tok_l.shape, Vr.shape[-1])
        return (ts_l * w.gather(-1, ids_l)).sum()

    # ---- the boundary programs (docs/backward.md table) ---------------------------------------------------------
    def program(case, x_in, W, b, eb, Vr):
        bw = case["backward"]
        bnd, ep = bw["boundary"], bool(bw["ep"])
        B, L = int(case["dims"]["batch"]), int(case["dims"]["seq"])
        D = int(case["dims"]["model"])
        T = B * L
        n = world
        tok_BL = torch.arange(T, dtype=torch.int64).reshape(B, L)
        if bnd in LOCAL_ROUTE or (bnd == "tt-3192" and not ep):
            x = x_in.redistribute(mesh, (R,), async_op=True)              # site moe.input (S(1)->R or R no-op)
            if bnd == "tt-3192":
                xv = x.view(T, D)                                         # stays a DTensor, no boundary
                logits = gate(xv, W, b)                                   # gate: input already DTensor R
            else:
                if bnd == "tt-2416":
                    xl = x.to_local(grad_placements=(P,))                 # site moe.to_local, label P
                else:
                    xl = x.to_local()                                     # site moe.to_local, label R
                xl = xl.view(T, D)
                xg = DTensor.from_local(xl, mesh, (R,), run_check=False)  # site gate.from_local, no grad label
                logits = gate(xg, W, b)
            if bnd == "tt-pre2416":
                sl = logits.to_local()                                    # site gate.to_local, label R
            else:
                sl = logits.to_local(grad_placements=(P,))                # site gate.to_local, label P
            ts, ids = route(case, sl, eb)                                 # local tensors, (T, K)
            if Vr is None:  # tokensplit over an uneven T: torchtitan's reorderer raises here
                raise ValueError(UNEVEN_MSG)
            return local_loss(ts, ids, tok_BL.reshape(T), Vr)
        eb_dt = None if eb is None else DTensor.from_local(eb, mesh, (R,), run_check=False)
        if bnd == "tt-3192":  # EP on
            xv = x_in.view(T, D)
            if xv.placements != (S(0),):                                  # site gate.input (SequenceParallel)
                xv = xv.redistribute(placements=(S(0),), async_op=True)
            logits = gate(xv, W, b)
            ts, ids = route(case, logits, eb_dt)                          # DTensors (T, K), S(0)
            ts_l = ts.to_local()                                          # site experts.to_local, default label
            ids_l = ids.to_local()
            tok = local_of(tok_BL.reshape(T), ts.placements[0], n, rank)
            return local_loss(ts_l, ids_l, tok, Vr)
        if bnd in ("tt-clean", "tt-3654"):
            x = x_in.redistribute(mesh, (S(1),) if ep else (R,), async_op=True)   # site router.input
            logits = gate(x, W, b)
            ts, ids = route(case, logits, eb_dt)                          # DTensors (B, L, K)
            # The experts' sharding config redistributes its inputs to in_dst before local_map (TT3386
            # moe_sharding.py L243-258, TT3654 L292-309): S(1) with EP on, R with EP off. Usually a no-op; not when
            # the propagation left ts elsewhere (L < tp: the 3-D gate mm on _StridedShard(0, B) all-gathers to R).
            in_dst = (S(1),) if ep else (R,)
            if ts.placements != in_dst:
                ts = ts.redistribute(placements=in_dst)
            if ids.placements != in_dst:
                ids = ids.redistribute(placements=in_dst)
            tok = local_of(tok_BL, in_dst[0], n, rank)
            if ep:
                in_grad = ((S(1),), (S(1),))
            elif bnd == "tt-clean":
                in_grad = ((P,), (P,))
            else:
                in_grad = None                                            # tt-3654, EP off: to_local() label R
            experts = local_map(lambda ts_l, ids_l: local_loss(ts_l, ids_l, tok, Vr),
                                out_placements=[P],
                                in_placements=(in_dst, in_dst),
                                in_grad_placements=in_grad,
                                device_mesh=mesh)                        # site experts.local_map
            out = experts(ts, ids)
            return out.to_local()
        raise ValueError(f"unknown boundary {bnd!r}")

    def reference(case, x_full, W_full, b_full, eb_full, V):
        x = x_full.clone().requires_grad_(True)
        W = W_full.clone().requires_grad_(True)
        b = None if b_full is None else b_full.clone().requires_grad_(True)
        B, L = x.shape[0], x.shape[1]
        ts, ids = route(case, gate(x, W, b), eb_full)
        tok = torch.arange(B * L, dtype=torch.int64).reshape(B, L)
        loss = local_loss(ts, ids, tok, V)
        loss.backward()
        out = {"gate.weight": W.grad}
        if b is not None:
            out["gate.bias"] = b.grad
        out["x"] = x.grad
        return {k: {"shape": list(v.shape), "dtype": DNAME[v.dtype], "values": values_of(v)} for k, v in out.items()}

    def rebuild(locs, pl):
        """Reduced value from the per-rank locals: sum over P (float64, one rounding), concatenation over
        S/_StridedShard (torch.chunk layout), rank 0 over R."""
        if isinstance(pl, Partial):
            st = torch.stack([t.double() for t in locs])
            return st.sum(0).to(locs[0].dtype)
        if isinstance(pl, Shard):
            d = pl.dim % locs[0].ndim
            if not is_strided(pl):
                return torch.cat(locs, dim=d)
            size = sum(t.shape[d] for t in locs)
            idx = torch.arange(size)
            shape = list(locs[0].shape)
            shape[d] = size
            out = locs[0].new_zeros(shape)
            for k, t in enumerate(locs):
                gidx = local_of(idx, _StridedShard(0, split_factor=pl.split_factor), len(locs), k)
                out.index_copy_(d, gidx, t)
            return out
        return locs[0]

    def write(line):
        if rank == 0:
            with open(args.results, "a") as f:
                f.write(json.dumps(line) + "\n")

    for gi, case in todo:
        clear_caches()
        bw = case["backward"]
        n = world
        assert [int(s) for s in case["mesh"]["shape"]] == [world], case["mesh"]
        dt = DT[case["dtype"]]
        d = case["dims"]
        B, L, D, E = int(d["batch"]), int(d["seq"]), int(d["model"]), int(d["experts"])
        T = B * L
        tens = case["tensors"]
        x_full = tensor_of(tens["x"], DT[tens["x"].get("dtype", case["dtype"])])
        W_full = tensor_of(tens["gate"], DT[tens["gate"].get("dtype", case["dtype"])])
        b_full = tensor_of(tens["gate_bias"], DT[tens["gate_bias"].get("dtype", case["dtype"])]) \
            if case["router"].get("gate_bias") else None
        eb_full = tensor_of(tens["expert_bias"], torch.float32) if case["router"].get("expert_bias") else None
        cls = loss_class(bw, n)
        seed = int(bw["loss_seed"])
        try:
            Vr = torch.tensor(rank_weights(seed, T, E, n, cls, rank), dtype=torch.float32).reshape(T, E)
        except ValueError:
            Vr = None

        status = {"rank": rank, "ok": False, "error": None, "timed_out": False, "comms": {}, "grads": {}}
        trace = {}
        try:
            def dtensor(full, pl, grad):
                loc = local_of(full, pl, n, rank)
                t = DTensor.from_local(loc, mesh, (pl,), run_check=False, shape=full.shape,
                                       stride=contiguous_stride(list(full.shape)))
                return t.requires_grad_(True) if grad else t

            x_in = dtensor(x_full, S(1) if bw["sp"] else R, True)
            W = dtensor(W_full, R, True)
            b = dtensor(b_full, R, True) if b_full is not None else None
            eb = eb_full.clone() if eb_full is not None else None
            dm = None
            if args.trace_dir:
                from torch.utils._debug_mode import DebugMode
                dm = DebugMode(record_torchfunction=False)
            if dm is not None:
                pl = PlacementLog()
                try:
                    with dm, pl:
                        loss = program(case, x_in, W, b, eb, Vr)
                finally:
                    trace["forward"] = dm.debug_string()
                    trace["forward_placements"] = "\n".join(pl.lines)
            else:
                loss = program(case, x_in, W, b, eb, Vr)
            cm = CommDebugMode()
            clog = CollectiveLog()
            dmb = None
            if args.trace_dir:
                from torch.utils._debug_mode import DebugMode
                dmb = DebugMode(record_torchfunction=False)
            plb = PlacementLog() if dmb is not None else None
            try:
                if dmb is not None:
                    with cm, dmb, plb:
                        loss.backward()
                else:
                    with cm, clog:
                        loss.backward()
            finally:
                status["comms"] = {str(k): int(v) for k, v in cm.get_comm_counts().items() if v}
                status["collectives"] = clog.records
                if dmb is not None:
                    trace["backward"] = dmb.debug_string()
                    trace["backward_placements"] = "\n".join(plb.lines)
            grads = {"gate.weight": W.grad}
            if b is not None:
                grads["gate.bias"] = b.grad
            grads["x"] = x_in.grad
            for name, g in grads.items():
                if g is None:
                    status["grads"][name] = None
                    continue
                if isinstance(g, DTensor):
                    loc = g.to_local()
                    if hasattr(loc, "wait"):
                        loc = loc.wait()
                    status["grads"][name] = {"placements": [pstr(p) for p in g.placements],
                                             "shape": [int(s) for s in g.shape],
                                             "dtype": DNAME.get(g.dtype, str(g.dtype)),
                                             "local": loc.detach().clone()}
                else:
                    status["grads"][name] = {"placements": ["plain"], "shape": [int(s) for s in g.shape],
                                             "dtype": DNAME.get(g.dtype, str(g.dtype)),
                                             "local": g.detach().clone()}
            status["ok"] = True
        except Exception as e:  # noqa: BLE001
            status["error"] = err_of(e)
            status["timed_out"] = is_timeout(e)
            if os.environ.get("BACKWARD_ORACLE_TB"):
                import traceback
                sys.stderr.write(f"rank {rank} case {gi}:\n{traceback.format_exc()}\n")

        all_status = [None] * world
        try:
            dist.all_gather_object(all_status, status, group=ctrl)
        except Exception as e:  # noqa: BLE001
            sys.stderr.write(f"rank {rank}: control exchange failed on case {gi}: {e}\n")
            os._exit(4)
        diverged = any(s["timed_out"] for s in all_status) or \
            any(s["comms"] != all_status[0]["comms"] for s in all_status)
        all_ok = all(s["ok"] for s in all_status)
        out = {"ok": all_ok and not diverged, "error": None, "loss_class": cls, "grads": {}, "reference": {},
               "comm_counts": all_status[0]["comms"]}
        if any(s["comms"] != all_status[0]["comms"] for s in all_status):
            out["rank_comm_counts"] = [s["comms"] for s in all_status]
        logs = [s.get("collectives", []) for s in all_status]
        if all(len(lg) == len(logs[0]) and all(a["op"] == b["op"] for a, b in zip(lg, logs[0])) for lg in logs):
            out["comms"] = [dict(c, bytes=max(lg[i]["bytes"] for lg in logs)) for i, c in enumerate(logs[0])]
        if not all_ok:
            first = next(s for s in all_status if not s["ok"])
            out["error"] = {"kind": first["error"]["kind"], "message": first["error"]["message"]}
            errs = [s["error"] for s in all_status]
            if any(e is None or e["kind"] != errs[0]["kind"] or e["message"] != errs[0]["message"] for e in errs):
                out["rank_errors"] = [None if e is None else {"kind": e["kind"], "message": e["message"]}
                                      for e in errs]
        elif diverged:
            out["error"] = {"kind": "Diverged", "message": "ranks issued different collectives or timed out"}
        if rank == 0 and all_ok and not diverged:
            for name in all_status[0]["grads"]:
                per = [s["grads"][name] for s in all_status]
                if per[0] is None:
                    out["grads"][name] = None
                    continue
                g0 = per[0]
                rec = {"placements": g0["placements"], "shape": g0["shape"], "dtype": g0["dtype"],
                       "locals": [{"shape": list(p["local"].shape), "values": values_of(p["local"])} for p in per]}
                if any(p["placements"] != g0["placements"] or p["shape"] != g0["shape"] for p in per):
                    rec["rank_placements"] = [p["placements"] for p in per]
                    rec["rank_shapes"] = [p["shape"] for p in per]
                try:
                    if g0["placements"] == ["plain"]:
                        red = per[0]["local"]
                    else:
                        red = rebuild([p["local"] for p in per], parse_p(g0["placements"][0]))
                    rec["reduced"] = values_of(red)
                    if list(red.shape) != g0["shape"]:
                        rec["reduced_shape"] = list(red.shape)
                except Exception as e:  # noqa: BLE001
                    rec["reduced"] = None
                    rec["reduce_error"] = f"{type(e).__name__}: {e}"
                out["grads"][name] = rec
        if rank == 0:
            try:
                V = torch.tensor(v_rows(seed, T, E), dtype=torch.float32)
                out["reference"] = reference(case, x_full, W_full, b_full, eb_full, V)
            except Exception as e:  # noqa: BLE001
                out["reference"] = {"error": {"kind": type(e).__name__, "message": str(e).split("\n")[0]}}
            if trace and args.trace_dir:
                os.makedirs(args.trace_dir, exist_ok=True)
                fn = os.path.join(args.trace_dir, f"{torch.__version__.split('+')[0]}-{bw['boundary']}-"
                                                  f"ep{1 if bw['ep'] else 0}.txt")
                with open(fn, "w") as f:
                    f.write(f"# torch {torch.__version__} ({torch.version.git_version}), tp={n}, rank 0, "
                            f"DebugMode(record_torchfunction=False)\n# backward: {json.dumps(bw)}\n"
                            f"# dims: {json.dumps(case['dims'])}, router: {json.dumps(case['router'])}\n"
                            f"# backward comm counts: {json.dumps(out['comm_counts'])}\n"
                            f"# loss class: {cls}; ok: {out['ok']}; error: {json.dumps(out['error'])}\n")
                    for name in ("gate.weight", "gate.bias", "x"):
                        if name in out["grads"] and out["grads"][name]:
                            f.write(f"# grad {name}: {out['grads'][name]['placements']}\n")
                    f.write("\n=== BACKWARD: DTensor ops, input -> output placements ===\n" +
                            trace.get("backward_placements", "(none)") +
                            "\n\n=== FORWARD: DTensor ops, input -> output placements ===\n" +
                            trace.get("forward_placements", "(none)") +
                            "\n\n=== BACKWARD: DebugMode (DTensor ops, implicit redistributions, local ops) ===\n" +
                            trace.get("backward", "(none)") +
                            "\n\n=== FORWARD: DebugMode ===\n" + trace.get("forward", "") + "\n")
        outcome = {"format": "shardfuzz.outcome/1", "case": case, "pytorch": torch_meta, "backward": out}
        write({"index": gi, "outcome": outcome, "abort": bool(diverged)})
        if diverged:
            sys.stdout.flush()
            os._exit(3)
        clear_caches()

    dist.barrier(group=ctrl)
    dist.destroy_process_group()


def parse_p(s):
    from torch.distributed.tensor import Partial, Replicate, Shard
    s = s.strip()
    if s == "R":
        return Replicate()
    if s.startswith("_S(") and s.endswith(")"):
        from torch.distributed.tensor.placement_types import _StridedShard
        dd, sf = s[3:-1].split(",")
        return _StridedShard(int(dd), split_factor=int(sf))
    if s.startswith("S(") and s.endswith(")"):
        return Shard(int(s[2:-1]))
    if s.startswith("P(") and s.endswith(")"):
        return Partial(s[2:-1])
    raise ValueError(f"bad placement {s!r}")


if __name__ == "__main__":
    if "--self-check" in sys.argv[1:]:
        self_check()
    elif "--worker" in sys.argv[1:]:
        worker(sys.argv[1:])
    else:
        driver(sys.argv[1:])
