"""Engine `gloo`: one process per rank on CPU with a real gloo process group, for what
LocalTensorMode cannot hold (ranks that disagree on a global shape after a local_map re-wrap) or on
request. Each rank runs the same program and saves its status; this process merges them.

A rank that raises while the others wait in a collective leaves them waiting: once one rank has
ended, the others get `grace` seconds, then are killed and recorded as hung. A case that takes
longer than `timeout` is killed whole."""

import datetime
import math
import os
import subprocess
import sys
import tempfile
import time

import torch

from . import common

HANG = "Hang"


class Ranks:
    """This rank's view (see local_engine.Ranks): lists hold one entry, this rank's."""

    def __init__(self, rank, world):
        self.rank, self.world = rank, world

    def rank_map(self, fn):
        return fn(self.rank)

    def dtensor(self, full, mesh, pls):
        return common.wrap(common.local_piece(full, list(mesh.shape), pls, self.rank), mesh, pls, full)

    def locals_of(self, t):
        return [common.local_of(t).detach().clone()]

    def global_shapes(self, t):
        return [[int(s) for s in t.shape]]

    def describe(self, t):
        from torch.distributed.tensor import DTensor
        pls = [common.placement_str(p) for p in t.placements] if isinstance(t, DTensor) else None
        return {"placements": pls, "shapes": self.global_shapes(t), "locals": self.locals_of(t)}

    @staticmethod
    def is_timeout(e):
        s = str(e).lower()
        return type(e).__name__ == "DistBackendError" or "timed out" in s or ("timeout" in s and "gloo" in s)


def rank_main(argv):
    """One rank: `python -m shardfuzz_worker.gloo_engine REQUEST RANK WORLD OUT`."""
    import json

    import torch.distributed as dist
    import torch.distributed.distributed_c10d as c10d
    from torch.distributed.device_mesh import init_device_mesh

    from . import boundary, forward

    common.die_with_parent()
    request, rank, world, out = argv[0], int(argv[1]), int(argv[2]), argv[3]
    with open(request) as f:
        req = json.load(f)
    case = req["case"]
    torch.set_num_threads(1)
    timeout = datetime.timedelta(seconds=req["pg_timeout"])
    c10d.default_pg_timeout = timeout  # the mesh's sub-groups too
    dist.init_process_group("gloo", init_method=req["init"], rank=rank, world_size=world, timeout=timeout)
    common.clear_caches()
    mesh = init_device_mesh("cpu", tuple(int(s) for s in case["mesh"]["shape"]),
                            mesh_dim_names=tuple(case["mesh"]["names"]))
    ranks = Ranks(rank, world)
    program = boundary.sharded if req["kind"] == "backward" else forward.sharded
    status = program(case, ranks, mesh)
    torch.save(status, out + ".tmp")
    os.replace(out + ".tmp", out)
    sys.stdout.flush()
    os._exit(0)  # no destroy: a peer that raised may have left collectives behind


def _merge(statuses, notes):
    """One status from every rank's (a rank's lists hold its own entry)."""
    ok = all(s is not None and s["ok"] for s in statuses)
    merged = {"ok": ok, "error": None, "outputs": {}, "comms": [], "grads": {}}
    for key in ("loss_class",):
        if statuses[0] is not None and key in statuses[0]:
            merged[key] = statuses[0][key]
    raised = [s for s in statuses if s is not None and not s["ok"]]
    real = [s for s in raised if s["error"]["kind"] != HANG and not s.get("timed_out")]
    if raised:
        merged["error"] = (real or raised)[0]["error"]
        kinds = {(s["error"]["kind"], s["error"]["message"]) for s in raised}
        if len(kinds) > 1 or len(raised) < len(statuses):
            notes.append("ranks differ: " + "; ".join(
                f"rank {r}: " + ("ok" if s["ok"] else f"{s['error']['kind']}: {s['error']['message'][:200]}")
                for r, s in enumerate(statuses)))
    first = statuses[0]
    merged["comms"] = first["comms"] if first is not None else []
    if any(s is not None and s["comms"] != merged["comms"] for s in statuses):
        notes.append("ranks issued different collectives: "
                     + "; ".join(f"rank {r}: {len(s['comms'])}" for r, s in enumerate(statuses) if s is not None))
    if ok and first.get("ids") is not None:
        merged["ids"] = {"placements": first["ids"]["placements"], "shapes": [s["ids"]["shapes"][0] for s in statuses],
                         "locals": [s["ids"]["locals"][0] for s in statuses]}
    if ok:
        for part in ("outputs", "grads"):
            for name, d0 in first.get(part, {}).items():
                per = [s[part][name] for s in statuses]
                if d0 is None:
                    merged[part][name] = None
                    continue
                merged[part][name] = {"placements": d0["placements"],
                                      "shapes": [p["shapes"][0] for p in per],
                                      "locals": [p["locals"][0] for p in per]}
                if any(p["placements"] != d0["placements"] for p in per):
                    notes.append(f"{name}: ranks differ in placements {[p['placements'] for p in per]}")
    return merged


class GlooEngine:
    name = "gloo"

    def __init__(self, timeout=300.0, grace=10.0, pg_timeout=60.0):
        self.timeout, self.grace, self.pg_timeout = timeout, grace, pg_timeout

    def run(self, case, kind, notes):
        """Runs the forward or backward program on one gloo process per rank; the merged status."""
        import json

        world = math.prod(int(s) for s in case["mesh"]["shape"])
        with tempfile.TemporaryDirectory(prefix="shardfuzz-gloo-") as td:
            req = os.path.join(td, "request.json")
            with open(req, "w") as f:
                json.dump({"case": case, "kind": kind, "init": "file://" + os.path.join(td, "store"),
                           "pg_timeout": self.pg_timeout}, f)
            outs = [os.path.join(td, f"rank{r}.pt") for r in range(world)]
            logs = [open(os.path.join(td, f"rank{r}.log"), "w+") for r in range(world)]
            env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=_package_root())
            procs = [subprocess.Popen([sys.executable, "-m", "shardfuzz_worker.gloo_engine", req, str(r),
                                       str(world), outs[r]], stdout=logs[r], stderr=subprocess.STDOUT, env=env)
                     for r in range(world)]
            self._wait(procs, notes)
            statuses = []
            for r in range(world):
                statuses.append(self._status_of(r, procs[r], outs[r], logs[r]))
                logs[r].close()
        return _merge(statuses, notes)

    def _wait(self, procs, notes):
        start, first_end = time.monotonic(), None
        while any(p.poll() is None for p in procs):
            now = time.monotonic()
            if first_end is None and any(p.poll() is not None for p in procs):
                first_end = now
            if now - start > self.timeout or (first_end is not None and now - first_end > self.grace):
                hung = [r for r, p in enumerate(procs) if p.poll() is None]
                notes.append(f"rank(s) {hung} killed after waiting "
                             + ("past the case timeout" if now - start > self.timeout
                                else f"{self.grace:.0f} s for peers that had ended (a collective without them)"))
                for p in procs:
                    if p.poll() is None:
                        p.kill()
                for p in procs:
                    p.wait()
                return
            time.sleep(0.05)

    @staticmethod
    def _status_of(r, proc, out, log):
        if os.path.exists(out):
            return torch.load(out, weights_only=False)
        log.seek(0)
        tail = " | ".join(log.read().strip().splitlines()[-3:])[-400:]
        if proc.returncode in (-9, None):
            return {"ok": False, "error": {"kind": HANG, "message": f"rank {r} was still waiting in a collective"},
                    "outputs": {}, "comms": []}
        return {"ok": False, "error": {"kind": "WorkerCrash", "message": f"rank {r} exited ({proc.returncode}): {tail}"},
                "outputs": {}, "comms": []}


def _package_root():
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    old = os.environ.get("PYTHONPATH")
    return here if not old else here + os.pathsep + old


if __name__ == "__main__":
    rank_main(sys.argv[1:])
