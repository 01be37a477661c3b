"""The confirm entry of the torchtitan 0.2.2 recorder: runs given tt-0.2.2 cases on gloo CPU ranks.

    python -m moe_recorder_022 --cases cases.jsonl --out outcomes.jsonl [--timeout 120]

Each input line is {"id": ..., "case": a shardfuzz.case/2 object with inline data.tensors}. Each
output line is a shardfuzz.outcome/2 line with that id (`outcome` with `error` {kind, message}
and the assembled outputs, `reference` the one-rank plain run, `pytorch` what ran), or
{"id": ..., "not_run": why} for a case whose ranks did not finish. The cases of one tp size share
one set of rank processes; the gloo group times out after --timeout seconds, and the ranks are
killed when the whole batch overruns.
"""
import argparse
import datetime
import json
import os
import socket
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from moe_recorder_022.core import NOTES, cat_seq, reference, sharded, tensors_of


def _rank(rank, world, port, cases, out, timeout):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=timeout))
    with open(f"{out}.rank{rank}", "a") as f:
        for cid, case in cases:
            r = sharded(rank, case, tensors_of(case))
            r.pop("tb", None)
            f.write(json.dumps({"id": cid, "result": r}) + "\n")
            f.flush()
            dist.barrier()
    dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_world(world, cases, out, timeout):
    """Runs `cases` on `world` ranks; each rank's results by case id (cases not finished absent)."""
    ctx = mp.spawn(_rank, args=(world, _free_port(), cases, out, timeout), nprocs=world, join=False)
    deadline = time.time() + 120 + timeout * len(cases)
    note = None
    while True:
        try:
            if ctx.join(timeout=1):
                break
        except Exception as e:  # a rank died: its error, the others killed
            note = f"a rank process failed: {str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}"
            break
        if time.time() > deadline:
            note = "the ranks ran past the batch's time limit and were killed"
            break
    for p in ctx.processes:
        if p.is_alive():
            p.kill()
    per_rank = []
    for r in range(world):
        got = {}
        if os.path.exists(f"{out}.rank{r}"):
            with open(f"{out}.rank{r}") as f:
                for line in f:
                    o = json.loads(line)
                    got[o["id"]] = o["result"]
            os.remove(f"{out}.rank{r}")
        per_rank.append(got)
    return per_rank, note


def assemble(cid, case, results, world):
    oc = {"ok": all(r["ok"] for r in results), "stage": None, "error": None, "outputs": {}}
    if oc["ok"]:
        for name in results[0]["locals"]:
            parts = [r["locals"][name] for r in results]
            oc["outputs"][name] = {"locals": parts, "value": cat_seq(parts)}
        for name in results[0]["outputs"]:
            oc["outputs"][name] = {"locals": [r["outputs"][name] for r in results], "value": results[0]["outputs"][name]}
    else:
        bad = next(r for r in results if not r["ok"])
        oc["stage"] = bad["stage"]
        oc["error"] = {"kind": bad["kind"], "message": bad["message"]}
        oc["rank_errors"] = [r.get("error") for r in results]
    ref = reference(case, tensors_of(case))
    if not ref["ok"]:
        kind, _, message = ref["error"].partition(": ")
        ref["error"] = {"kind": kind, "message": message}
    notes = list(NOTES)
    if case["subject"]["dims"].get("shared_hidden"):
        notes[2] = notes[2].replace("no shared experts", "shared experts of the case's shared_hidden")
    return {"id": cid, "format": "shardfuzz.outcome/2", "case": case, "outcome": oc, "reference": ref,
            "pytorch": {"torch": torch.__version__.split("+")[0], "torchtitan": "0.2.2", "backend": "dtensor_hooks",
                        "engine": "gloo", "world": world, "notes": notes}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--timeout", type=int, default=120)
    a = ap.parse_args(argv)
    with open(a.cases) as f:
        items = [json.loads(line) for line in f if line.strip()]
    by_world = {}
    for it in items:
        by_world.setdefault(it["case"]["mesh"]["shape"][2], []).append((it["id"], it["case"]))
    with open(a.out, "w") as out:
        for world, cases in sorted(by_world.items()):
            per_rank, note = run_world(world, cases, a.out, a.timeout)
            for cid, case in cases:
                results = [got.get(cid) for got in per_rank]
                if any(r is None for r in results):
                    line = {"id": cid, "not_run": note or "the ranks wrote no result for it"}
                else:
                    line = assemble(cid, case, results, world)
                out.write(json.dumps(line) + "\n")
                out.flush()
    return 0


if __name__ == "__main__":  # python -m moe_recorder_022.confirm
    sys.exit(main())
