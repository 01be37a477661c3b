"""A forward case on real DTensor: distribute the inputs as the case lays them out, run the router
revision under the comm log, describe every output on every rank. Engine-neutral: `ranks` says how
a tensor is per rank (see local_engine.Ranks and gloo_engine.Ranks)."""

from . import common
from .commlog import CommLog
from .router import router


def reference(case):
    """The same router on the plain, unsharded inputs: {ok, outputs, error}."""
    x, gate, gate_bias, expert_bias = common.inputs(case)
    try:
        outs = router(case, x, gate, gate_bias, expert_bias)
    except Exception as e:  # noqa: BLE001 (recorded: the reference may raise too)
        return {"ok": False, "outputs": {}, "error": common.error_of(e)}
    return {"ok": True, "outputs": {k: common.data_of(v) for k, v in outs.items()}, "error": None}


def sharded(case, ranks, mesh):
    """The sharded run. Returns a status: ok, error, outputs {name: {placements, shapes, locals}}
    (one entry per rank this process holds), comms."""
    x, gate, gate_bias, expert_bias = common.inputs(case)
    lay = case["layout"]
    status = {"ok": False, "error": None, "outputs": {}, "comms": []}
    log = CommLog(mesh)
    try:
        def place(full, key):
            return ranks.dtensor(full, mesh, common.placements(lay[key], full.ndim))

        xd, gd = place(x, "x"), place(gate, "gate")
        gbd = place(gate_bias, "gate_bias") if gate_bias is not None else None
        ebd = place(expert_bias, "expert_bias") if expert_bias is not None else None
        with log:
            outs = router(case, xd, gd, gbd, ebd, label=lambda name: setattr(log, "label", name))
        status["outputs"] = {k: ranks.describe(v) for k, v in outs.items()}
        status["ok"] = True
    except Exception as e:  # noqa: BLE001 (what real DTensor raised is the finding)
        status["error"] = common.error_of(e)
        if ranks.is_timeout(e):
            status["timed_out"] = True
    status["comms"] = log.records
    return status
