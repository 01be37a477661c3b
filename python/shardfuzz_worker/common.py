"""What every engine shares: placements as shardfuzz writes them, tensors from and to JSON,
torch.chunk layouts, errors, and DTensor's caches."""

import math

import torch
from torch.distributed.tensor import Partial, Replicate, Shard

try:
    from torch.distributed.tensor.placement_types import _StridedShard
except ImportError:  # pragma: no cover (every release we run has it)
    _StridedShard = None

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16, "f64": torch.float64}
NAMES = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16", torch.float64: "f64",
         torch.int64: "i64", torch.int32: "i32", torch.bool: "bool"}
NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
OUTPUTS = ["topk_scores", "topk_ids", "scores", "routing_map", "counts", "group_mask"]


class CaseError(Exception):
    """The case cannot be run here (bad input, not a worker failure)."""


# ---- placements --------------------------------------------------------------------------------

def is_strided(p):
    return _StridedShard is not None and isinstance(p, _StridedShard)


def parse_placement(s):
    s = s.strip()
    if s == "R":
        return Replicate()
    if s.startswith("_S(") and s.endswith(")"):
        dim, sf = s[3:-1].split(",")
        return _StridedShard(int(dim), split_factor=int(sf))
    if s.startswith("S(") and s.endswith(")"):
        return Shard(int(s[2:-1]))
    if s.startswith("P(") and s.endswith(")"):
        return Partial(s[2:-1])
    raise CaseError(f"bad placement {s!r}")


def placement_str(p):
    if is_strided(p):
        return f"_S({p.dim},{p.split_factor})"
    if isinstance(p, Shard):
        return f"S({p.dim})"
    if isinstance(p, Replicate):
        return "R"
    if isinstance(p, Partial):
        return f"P({p.reduce_op})"
    return repr(p)


def placements(strs, ndim):
    """Parsed placements with shard dims made non-negative (as DTensor stores them)."""
    out = []
    for s in strs:
        p = parse_placement(s)
        if is_strided(p):
            p = _StridedShard(p.dim % ndim, split_factor=p.split_factor)
        elif isinstance(p, Shard):
            p = Shard(p.dim % ndim)
        out.append(p)
    return tuple(out)


# ---- layouts -----------------------------------------------------------------------------------

def coords(mesh_shape, rank):
    """Row-major mesh coordinates of `rank`."""
    c = []
    for d in range(len(mesh_shape)):
        c.append((rank // math.prod(mesh_shape[d + 1:])) % mesh_shape[d])
    return c


def chunk(t, n, k, dim):
    """torch.chunk's k-th piece of n (empty past the last piece), as DTensor shards."""
    pieces = torch.chunk(t, n, dim=dim)
    if k < len(pieces):
        return pieces[k]
    shape = list(t.shape)
    shape[dim] = 0
    return t.new_empty(shape)


def local_piece(full, mesh_shape, pls, rank):
    """Rank `rank`'s local tensor of `full` under `pls`, mesh dims nested left to right, as
    distribute_tensor lays it out. A Partial mesh dim partitions the value as distribute_tensor
    does (Partial._partition_value): P(sum) leaves every rank its share 1/n, P(avg|max|min) the
    value itself."""
    c = coords(mesh_shape, rank)
    t = full
    for md, p in enumerate(pls):
        n, k = mesh_shape[md], c[md]
        if is_strided(p):
            pieces = torch.chunk(t, p.split_factor, dim=p.dim)
            t = torch.cat([chunk(pc, n, k, p.dim) for pc in pieces], dim=p.dim)
        elif isinstance(p, Shard):
            t = chunk(t, n, k, p.dim)
        elif isinstance(p, Partial) and p.reduce_op == "sum":
            t = t / n
    return t.contiguous()


def wrap(local, mesh, pls, full):
    """A DTensor of `full`'s global shape and stride over `local` (a rank's piece, or a
    LocalTensor of every rank's), as distribute_tensor lays it out."""
    from torch.distributed.tensor import DTensor
    return DTensor.from_local(local, mesh, pls, run_check=False, shape=full.shape,
                              stride=contiguous_stride(list(full.shape)))


def local_of(t):
    """A DTensor's local tensor (waited on when async), or the tensor itself."""
    from torch.distributed.tensor import DTensor
    loc = t.to_local() if isinstance(t, DTensor) else t
    return loc.wait() if hasattr(loc, "wait") else loc


def contiguous_stride(shape):
    stride, acc = [], 1
    for s in reversed(shape):
        stride.append(acc)
        acc *= s
    return tuple(reversed(stride))


# ---- tensors as JSON ---------------------------------------------------------------------------

def tensor_of(spec, dtype):
    vals = [NONFINITE[v] if isinstance(v, str) else float(v) for v in spec["values"]]
    return torch.tensor(vals, dtype=torch.float64).reshape(spec["shape"]).to(dtype)


def values_of(t):
    """Row-major values; floats exact (a float32 value is exact in float64), non-finite as strings."""
    t = t.detach().contiguous().reshape(-1)
    if t.dtype == torch.bool:
        return [bool(v) for v in t.tolist()]
    if not t.dtype.is_floating_point:
        return [int(v) for v in t.tolist()]
    out = []
    for v in t.double().tolist():
        if math.isnan(v):
            out.append("NaN")
        elif math.isinf(v):
            out.append("Infinity" if v > 0 else "-Infinity")
        else:
            out.append(v)
    return out


def data_of(t):
    """A tensor as shardfuzz's TensorData: {shape, dtype, values}."""
    return {"shape": [int(s) for s in t.shape], "dtype": NAMES.get(t.dtype, str(t.dtype)),
            "values": values_of(t)}


def view(case, tables):
    """The case as this package's modules read it: a router case's subject fields at the top
    level, its rule set and the request's tables under `revision`, its tensors at the top level.
    The tables (how the revision writes its scatter sites, which sites promise no collective,
    the release) come from shardfuzz with every request: the package keeps no copy of them."""
    if not tables or "sites" not in tables:
        raise CaseError("a router case needs shardfuzz's tables (sites) in the request; "
                        "run it with `shardfuzz confirm`")
    if case.get("format") == "shardfuzz.case/1":
        v = dict(case)
        v["revision"] = dict(case["revision"])
    else:
        subject = case["subject"]
        if subject.get("kind") != "router":
            raise CaseError(f"this worker runs router cases, not {subject.get('kind')!r}")
        v = {k: case[k] for k in ("mesh", "dtype", "device")}
        v.update({k: subject.get(k) for k in ("dims", "router", "layout", "backward")})
        v["revision"] = dict(subject["revision"], rules=case["rules"])
        v["tensors"] = case["data"].get("tensors")
    v["revision"]["sites"] = (tables["sites"]["group_mask"], tables["sites"]["routing_map"])
    v["revision"]["quiet_sites"] = list(tables.get("quiet_sites", []))
    v["revision"]["release"] = tables.get("release")
    return v


def inputs(case):
    """The case's full input tensors: x and gate in the case dtype, the biases."""
    tens = case.get("tensors")
    if not tens:
        raise CaseError("the case has no inline tensors (shardfuzz sends them inline)")
    x = tensor_of(tens["x"], DTYPES[tens["x"].get("dtype", case["dtype"])])
    gate = tensor_of(tens["gate"], DTYPES[tens["gate"].get("dtype", case["dtype"])])
    gate_bias = expert_bias = None
    if case["router"].get("gate_bias"):
        gate_bias = tensor_of(tens["gate_bias"], DTYPES[tens["gate_bias"].get("dtype", case["dtype"])])
    if case["router"].get("expert_bias"):
        expert_bias = tensor_of(tens["expert_bias"], torch.float32)
    return x, gate, gate_bias, expert_bias


# ---- errors and caches -------------------------------------------------------------------------

def error_of(e):
    """The exception as shardfuzz records it: the class name and the first line of str(e)."""
    return {"kind": type(e).__name__, "message": str(e).split("\n")[0]}


def clear_caches():
    """DTensor's sharding-propagation caches, Python and C++: their keys leave out some non-tensor
    arguments (topk's k in 2.11-2.13), so a case must not see the one before it."""
    try:
        from torch.distributed.tensor.debug import _clear_sharding_prop_cache
        _clear_sharding_prop_cache()
    except ImportError:  # pragma: no cover
        pass
    if hasattr(torch._C, "_clear_DTensor_sharding_propagator_cache"):
        torch._C._clear_DTensor_sharding_propagator_cache()


def rebuild(locals_, pls, mesh_shape):
    """The global value from every rank's local tensor (rank-major): concatenation over Shard and
    _StridedShard (torch.chunk layout), the reduction over Partial, rank 0's over Replicate; mesh
    dims undone innermost first."""
    cur = {tuple(coords(mesh_shape, r)): t for r, t in enumerate(locals_)}
    for md in reversed(range(len(mesh_shape))):
        p, groups = pls[md], {}
        for c, t in cur.items():
            groups.setdefault(c[:md], []).append((c[md], t))
        cur = {key: _undo(p, [t for _, t in sorted(lst, key=lambda a: a[0])]) for key, lst in groups.items()}
    return cur[()]


def _undo(p, ts):
    if is_strided(p):
        size = sum(t.shape[p.dim] for t in ts)
        shape = list(ts[0].shape)
        shape[p.dim] = size
        out = ts[0].new_zeros(shape)
        idx = torch.arange(size)
        for k, t in enumerate(ts):
            out.index_copy_(p.dim, local_piece(idx, [len(ts)], (_StridedShard(0, split_factor=p.split_factor),), k), t)
        return out
    if isinstance(p, Shard):
        return torch.cat(ts, dim=p.dim)
    if isinstance(p, Partial):
        st = torch.stack(ts)
        if p.reduce_op == "sum":
            return (st.double().sum(0) if st.dtype.is_floating_point else st.sum(0)).to(ts[0].dtype)
        if p.reduce_op == "avg":
            return st.double().mean(0).to(ts[0].dtype)
        return st.amax(0) if p.reduce_op == "max" else st.amin(0)
    return ts[0]


def die_with_parent():
    """Linux: be killed when the parent process dies (a killed shardfuzz leaves no worker behind)."""
    try:
        import ctypes
        import signal
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover (not Linux)
        pass
