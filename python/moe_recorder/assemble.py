"""Per-rank locals -> global values, in plain Python (no torch needed).

A rank reports each output with the layout torchtitan's sharding config declares for it
({"mesh": "dense"|"sparse", "axes": {axis: "R"|"I"|"P"|"V"|"S(d)"}, "spec": [...] | null}).
The global value is rebuilt one mesh axis at a time:

- S(d) (or V named in the partition spec): concatenate along d in axis order; with several axes
  on one dim the inner one (later in the spec tuple) is joined first;
- P: elementwise sum over the axis;
- R or I for a value: the replicas must agree; the first one is taken and any disagreement is
  reported (`replicas_differ`);
- R for a parameter gradient: summed over the axis -- FSDP's duty (it reduces the gradients of
  parameters replicated on dp/cp/efsdp/dp_replicate, and for R@tp parameters the pending TP
  reduction too); I for a gradient must agree, like a value.

Sums run in rank order along the axis, rounding to float32 after every addition (what a float32
reduction over these ranks computes in that order); bf16 results are summed in float32 and rounded
to bfloat16 once at the end (FSDP's reduce dtype is float32 by default)."""

import math
import struct


def f32(x):
    if isinstance(x, str):
        return x
    try:
        return struct.unpack("f", struct.pack("f", x))[0]
    except OverflowError:
        return math.copysign(float("inf"), x)


def bf16(x):
    """Round a float to bfloat16 (round to nearest even), returned as a Python float."""
    if isinstance(x, str) or x != x or math.isinf(x):
        return x
    bits = struct.unpack("I", struct.pack("f", f32(x)))[0]
    lsb = (bits >> 16) & 1
    bits = (bits + 0x7FFF + lsb) & 0xFFFF0000
    return struct.unpack("f", struct.pack("I", bits))[0]


def shortest(v):
    """Shortest decimal that reads back to the same float32 (so also bfloat16) value; non-finite
    values as the strings NaN / Infinity / -Infinity."""
    if isinstance(v, str):
        return v
    if v != v:
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    if v == 0:
        return -0.0 if math.copysign(1.0, v) < 0 else 0.0
    for p in range(1, 10):
        s = float(f"{v:.{p}g}")
        if f32(s) == v:
            return s
    return v


def _num(v):
    if isinstance(v, str):
        return {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}[v]
    return v


def _out(v):
    if isinstance(v, float):
        if v != v:
            return "NaN"
        if math.isinf(v):
            return "Infinity" if v > 0 else "-Infinity"
    return v


def parse_type(s):
    s = s.strip()
    if s.startswith("S(") and s.endswith(")"):
        return ("S", int(s[2:-1]))
    return (s, None)


def _strides(shape):
    st = [1] * len(shape)
    for i in range(len(shape) - 2, -1, -1):
        st[i] = st[i + 1] * shape[i + 1]
    return st


def concat(tensors, dim):
    base = tensors[0]
    nd = len(base["shape"])
    if dim < 0:
        dim += nd
    outer = 1
    for s in base["shape"][:dim]:
        outer *= s
    inner = 1
    for s in base["shape"][dim + 1:]:
        inner *= s
    for t in tensors:
        if len(t["shape"]) != nd or t["shape"][:dim] != base["shape"][:dim] or t["shape"][dim + 1:] != base["shape"][dim + 1:]:
            raise ValueError(f"cannot concatenate shapes {[x['shape'] for x in tensors]} on dim {dim}")
    vals = []
    for o in range(outer):
        for t in tensors:
            n = t["shape"][dim] * inner
            vals.extend(t["values"][o * n:(o + 1) * n])
    shape = list(base["shape"])
    shape[dim] = sum(t["shape"][dim] for t in tensors)
    return {"shape": shape, "dtype": base["dtype"], "values": vals}


def add(tensors):
    base = tensors[0]
    for t in tensors:
        if t["shape"] != base["shape"]:
            raise ValueError(f"cannot sum shapes {[x['shape'] for x in tensors]}")
    if base["dtype"] in ("i64", "i32", "bool"):
        vals = [sum(int(t["values"][i]) for t in tensors) for i in range(len(base["values"]))]
        return {"shape": list(base["shape"]), "dtype": base["dtype"], "values": vals}
    vals = []
    for i in range(len(base["values"])):
        acc = _num(tensors[0]["values"][i])
        for t in tensors[1:]:
            acc = f32(acc + _num(t["values"][i]))
        vals.append(acc)
    if base["dtype"] == "bf16":
        vals = [bf16(v) for v in vals]
    return {"shape": list(base["shape"]), "dtype": base["dtype"], "values": [shortest(v) for v in vals]}


def max_diff(a, b):
    if a["shape"] != b["shape"]:
        return "shape"
    m = 0.0
    for x, y in zip(a["values"], b["values"]):
        x, y = _num(x), _num(y)
        if isinstance(x, bool) or isinstance(y, bool):
            x, y = int(x), int(y)
        if x == y or (x != x and y != y):
            continue
        d = abs(x - y)
        if d != d:
            return "nan"
        m = max(m, d)
    return m


def mesh_axes(kind, dims):
    """[(axis, size)] of the dense (dp, cp, tp) or sparse (dp_replicate, efsdp, ep) mesh."""
    if kind == "dense":
        return [("dp", dims["dp"]), ("cp", dims["cp"]), ("tp", dims["tp"])]
    return [("dp_replicate", dims["dp_replicate"]), ("efsdp", dims["efsdp"]), ("ep", dims["ep"])]


def coords(rank, sizes):
    out = []
    for s in reversed(sizes):
        out.append(rank % s)
        rank //= s
    return tuple(reversed(out))


def assemble(layout, locals_, dims, grad=False):
    """Global value of one output from its per-rank locals (list indexed by world rank).
    Returns (value, notes) where notes lists replica disagreements."""
    axes = mesh_axes(layout["mesh"], dims)
    names = [a for a, _ in axes]
    sizes = [s for _, s in axes]
    kinds = {}
    for a in names:
        t = layout["axes"].get(a)
        kinds[a] = parse_type(t) if t is not None else ("R", None)
    order_in_spec = {}
    if layout.get("spec"):
        for dim, entry in enumerate(layout["spec"]):
            if not entry:
                continue
            for pos, a in enumerate(entry):
                kinds[a] = ("S", dim)
                order_in_spec[a] = pos
    grid = {}
    for r, t in enumerate(locals_):
        grid[coords(r, sizes)] = t
    notes = []
    # reduce axes: non-shard axes first, then shard axes innermost (latest in the spec) first
    idx = list(range(len(names)))
    idx.sort(key=lambda i: (kinds[names[i]][0] == "S", -order_in_spec.get(names[i], 0), -i))
    live = list(range(len(names)))
    for i in idx:
        a = names[i]
        kind, dim = kinds[a]
        pos = live.index(i)
        groups = {}
        for c, t in grid.items():
            rest = c[:pos] + c[pos + 1:]
            groups.setdefault(rest, []).append((c[pos], t))
        new = {}
        for rest, items in groups.items():
            items.sort(key=lambda x: x[0])
            ts = [t for _, t in items]
            if len(ts) == 1:
                new[rest] = ts[0]
            elif kind == "S":
                new[rest] = concat(ts, dim)
            elif kind == "P" or (kind == "R" and grad):
                new[rest] = add(ts)
            else:  # R / I (values), I (grads), V without a spec: replicas must agree
                worst = 0.0
                for t in ts[1:]:
                    d = max_diff(ts[0], t)
                    if d != 0.0:
                        worst = d if isinstance(d, str) else max(worst, d) if not isinstance(worst, str) else worst
                if worst != 0.0:
                    notes.append({"axis": a, "type": kind, "max_abs_diff": worst})
                new[rest] = ts[0]
        grid = new
        live.pop(pos)
    assert len(grid) == 1
    return next(iter(grid.values())), notes
