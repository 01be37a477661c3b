"""The worker loop: one request per line on stdin, one outcome (shardfuzz.outcome/1) per line on
stdout, in order. A request is `{"case": {...}, "engine": "auto" | "local" | "gloo", "tables": {...}}`:
the case (shardfuzz.case/2, a router subject; or case/1) carries its tensors inline, and the tables
are shardfuzz's (common.view).

Engines: `local` runs every rank in this process (fake process group + LocalTensorMode); `gloo`
runs one process per rank; `auto` is local, and gloo where LocalTensorMode cannot hold the case
(ranks that disagree on a global shape: its shape arithmetic then fails on a per-rank size). The
outcome's `pytorch.engine` says which ran, `pytorch.notes` why."""

import json
import math
import os
import signal
import sys
import time
import traceback

import torch

from . import boundary, common, forward
from .gloo_engine import GlooEngine
from .local_engine import LocalEngine

_local, _gloo = LocalEngine(), GlooEngine()


# What LocalTensorMode itself raises when ranks hold different sizes where DTensor expects one
# (a LocalIntNode in a global shape reaches a hash, or an op lookup on a symbolic size).
LOCAL_TENSOR_LIMITS = ("SymInt", "symbolic sizes", "could not look up op for aten::size")


def unrepresentable(status):
    """The local engine failed for LocalTensorMode's own reasons, not DTensor's."""
    err = status.get("error") or {}
    return not status["ok"] and any(s in err.get("message", "") for s in LOCAL_TENSOR_LIMITS)


def run(case, kind, engine, notes):
    """(engine used, status) of the forward or backward program."""
    program = boundary.sharded if kind == "backward" else forward.sharded
    if engine in ("auto", "local"):
        status = _local.run(case, lambda ranks, mesh: program(case, ranks, mesh))
        if not unrepresentable(status):
            return "local", status
        why = f"LocalTensorMode cannot represent this case ({status['error']['kind']}: {status['error']['message']})"
        if engine == "local":
            # Not a real outcome: the case is not run rather than compared with LocalTensorMode's error.
            raise common.CaseError(why + "; run it with --engine gloo or auto")
        notes.append(why + "; ran on one gloo process per rank")
    return "gloo", _gloo.run(case, kind, notes)


def sharded_side(case, status):
    mesh_shape = [int(s) for s in case["mesh"]["shape"]]
    side = {"ok": status["ok"], "error": status["error"], "outputs": {}, "comms": status["comms"]}
    for name, d in status["outputs"].items():
        side["outputs"][name] = output(d, mesh_shape)
    return side


def output(d, mesh_shape, grad=False):
    """One output (or gradient) as the outcome writes it."""
    locs, pls = d["locals"], d["placements"]
    rec = {"placements": pls if pls is not None else ["plain"]}
    if grad:
        rec["shape"] = d["shapes"][0]
    else:
        rec.update(global_shape=d["shapes"][0], rank_global_shapes=d["shapes"],
                   local_shapes=[list(t.shape) for t in locs], dtype=common.NAMES.get(locs[0].dtype, "?"))
    try:
        full = locs[0] if pls is None else common.rebuild(locs, [common.parse_placement(p) for p in pls], mesh_shape)
        key = "reduced" if grad else "values"
        rec[key] = common.data_of(full) if grad else common.values_of(full)
    except Exception as e:  # noqa: BLE001
        rec["gather_error"] = f"{type(e).__name__}: {e}"
    rec["locals"] = [common.data_of(t) for t in locs]
    return rec


def backward_side(case, status):
    mesh_shape = [int(s) for s in case["mesh"]["shape"]]
    grads = {k: (None if g is None else output(g, mesh_shape, grad=True)) for k, g in status["grads"].items()}
    out = {"ok": status["ok"], "error": status["error"], "loss_class": status.get("loss_class"),
           "grads": grads, "reference": boundary.reference(case), "comms": status["comms"]}
    ids = status.get("ids")
    if status["ok"] and ids is not None:
        locs = ids["locals"]
        full = locs[0] if ids["placements"] is None else common.rebuild(
            locs, [common.parse_placement(p) for p in ids["placements"]], mesh_shape)
        out["ids"] = common.data_of(full)
    return out


def fault(kind):
    """Test hook: lose this case the hard way (`hang` or `crash`)."""
    if kind == "hang":
        time.sleep(3600)
    elif kind == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)


def handle(req):
    raw = req["case"]
    case = common.view(raw, req.get("tables"))
    engine = req.get("engine", "auto")
    if req.get("fault"):
        fault(req["fault"])
    if engine not in ("auto", "local", "gloo"):
        raise common.CaseError(f"unknown engine {engine!r} (auto, local or gloo)")
    notes = []
    used, status = run(case, "forward", engine, notes)
    out = {"format": "shardfuzz.outcome/1", "case": raw, "reference": forward.reference(case),
           "sharded": sharded_side(case, status), "verdicts": []}
    if case.get("backward"):
        used_b, bstatus = run(case, "backward", engine if used == "local" else "gloo", notes)
        used = used_b if used_b == "gloo" else used
        out["backward"] = backward_side(case, bstatus)
    out["pytorch"] = {"version": torch.__version__, "git": torch.version.git_version, "engine": used,
                      "world": math.prod(int(s) for s in case["mesh"]["shape"]), "notes": notes}
    return out


def main(stdin=sys.stdin, stdout=sys.stdout):
    common.die_with_parent()
    torch.set_num_threads(1)
    stdout.write(json.dumps({"ready": True, "version": torch.__version__}) + "\n")
    stdout.flush()
    for line in stdin:
        if not line.strip():
            continue
        try:
            reply = handle(json.loads(line))
        except Exception as e:  # noqa: BLE001 (one bad case must not end the loop)
            reply = {"worker_error": common.error_of(e), "traceback": traceback.format_exc()[-2000:]}
        stdout.write(json.dumps(reply) + "\n")
        stdout.flush()
    os._exit(0)  # at end of input: no teardown of process groups left behind
