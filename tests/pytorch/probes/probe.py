"""Probe helpers (shardfuzz research, 2026-11-29).
One process: fake process group + LocalTensorMode; DTensor inputs built from per-rank locals
(_common.Harness.dt). Records, per DTensor op: aten op, input placements, output placements,
input redistributions (src->dst, from the dispatcher), and redistributions done by autograd
nodes (from_local / Redistribute backward). Strategy recorder dumps every candidate OpSpec with
its redistribute cost and marks the chosen one."""
import os, sys, json
sys.path.insert(0, os.path.dirname(__file__))
from _common import *  # noqa
from _common import _clear_sharding_prop_cache, _StridedShard
import torch.distributed.tensor._sharding_prop as SP
import torch.distributed.tensor._dispatch as DISP
import torch.distributed.tensor._api as API
import torch.distributed.tensor._redistribute as RED
from torch.distributed.tensor._op_schema import OpStrategy
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

RECORD = []
EVENTS = []

def pstr2(p):
    n = type(p).__name__
    if n == "_MaskPartial":
        return "MaskP"
    if n == "_NormPartial":
        return f"NormP({p.norm_type})"
    return pstr(p)

def pl(ps):
    return "[" + ", ".join(pstr2(p) for p in ps) + "]"

_orig_select = SP._select_min_cost_strategy
def _rec_select(strategy, op_schema=None):
    chosen = _orig_select(strategy, op_schema)
    if op_schema is not None and isinstance(strategy, OpStrategy):
        cands = []
        for i, s in enumerate(strategy.strategies):
            outs = s.output_specs
            if isinstance(outs, tuple):
                o = "(" + ",".join(pl(x.placements) if x is not None else "None" for x in outs) + ")"
            else:
                o = pl(outs.placements) if outs is not None else "None"
            ins = [pl(x.placements) for x in (s.input_specs or [])]
            cost = [round(float(sum(c)), 3) for c in (s.redistribute_cost or [])]
            cands.append((i, o, ins, cost, s is chosen))
        RECORD.append({"op": str(op_schema.op),
                       "inputs": [pl(a.placements) for a in op_schema.args_spec],
                       "cands": cands})
    return chosen
SP._select_min_cost_strategy = _rec_select

_orig_rlt = RED.redistribute_local_tensor
def _mk_rlt(tag):
    def f(local_tensor, current_spec, target_spec, *a, **k):
        EVENTS.append(("redist", tag, pl(current_spec.placements) + "->" + pl(target_spec.placements)))
        return _orig_rlt(local_tensor, current_spec, target_spec, *a, **k)
    return f
DISP.redistribute_local_tensor = _mk_rlt("dispatch")
API.redistribute_local_tensor = _mk_rlt("api(from_local bwd)")
RED.redistribute_local_tensor = _mk_rlt("Redistribute")

class Trace(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat, _ = tree_flatten((args, kwargs))
        if any(isinstance(a, DTensor) for a in flat):
            def d(a):
                if isinstance(a, DTensor):
                    return pl(a.placements) + str(list(a.shape))
                if isinstance(a, torch.Tensor):
                    return "T" + str(list(a.shape))
                return repr(a)
            desc = f"{func}(" + ", ".join(d(a) for a in args) + (", " + ", ".join(f"{k}={d(v)}" for k, v in kwargs.items()) if kwargs else "") + ")"
            idx = len(EVENTS)
            EVENTS.append(("op", desc, None))
            out = func(*args, **kwargs)
            oflat, _ = tree_flatten(out)
            outs = [pl(o.placements) + str(list(o.shape)) for o in oflat if isinstance(o, DTensor)]
            EVENTS[idx] = ("op", desc, " -> " + ", ".join(outs))
            return out
        return func(*args, **kwargs)

def fmt_events():
    lines = []
    for e in EVENTS:
        if e[0] == "op":
            lines.append("    " + e[1] + (e[2] or ""))
        else:
            lines.append(f"       redistribute[{e[1]}] {e[2]}")
    return "\n".join(lines)

def dump_record(H, only=None, maxc=400):
    out = []
    for r in RECORD:
        if only is not None and not any(o in r["op"] for o in only):
            continue
        lines = [f"  CANDS {r['op']} inputs={r['inputs']}  #cands={len(r['cands'])}"]
        for (i, o, ins, cost, ch) in r["cands"][:maxc]:
            lines.append(f"    {'*' if ch else ' '}{i:3d} out={o} in={ins} cost={cost} sum={round(sum(cost),3)}")
        out.append("\n".join(lines))
    RECORD.clear()
    if out:
        H.print("\n".join(out))

def run(H, label, fn, record_ops=(), maxc=400):
    """record_ops: substrings of op names whose candidate lists are printed (None = all)."""
    _clear_sharding_prop_cache()
    RECORD.clear(); EVENTS.clear()
    H.print(f"=== {label}  (torch {torch.__version__})")
    cm = CommDebugMode()
    res = None
    try:
        with cm, Trace():
            res = fn()
    except Exception as e:
        EVENTS.append(("op", f"EXC {type(e).__name__}: {str(e).splitlines()[0] if str(e) else '(empty message)'}", None))
        if os.environ.get("TB"):
            import traceback; EVENTS.append(("op", traceback.format_exc(), None))
    H.print(fmt_events())
    H.print("  comms: " + json.dumps({str(k): v for k, v in cm.get_comm_counts().items() if v}))
    dump_record(H, only=record_ops, maxc=maxc)
    EVENTS.clear()
    _clear_sharding_prop_cache()
    return res

def note(H, s):
    EVENTS.append(("op", "# " + s, None))

def gdesc(t):
    if t is None:
        return "None"
    if isinstance(t, DTensor):
        return pl(t.placements) + str(list(t.shape))
    return "plain" + str(list(t.shape))
