#!/usr/bin/env python3
"""compare_outcomes.py: compare shardfuzz's simulated outcomes with router_oracle.py's real-PyTorch ones.

    python3 compare_outcomes.py OURS.jsonl REAL.jsonl [--label t213] [--json OUT.json]

Cases are matched by their `case` object with `tensors` removed plus the case file name when present
(same order is assumed when the file name is absent). Per case it compares: sharded.ok; error kind and first
line of the message; for each sharded output: placements, global_shape, rank_global_shapes, local_shapes,
dtype, values (floats |a-b| <= 1e-6 + 1e-5*|b|, "NaN"/"Infinity" strings exactly, ints/bools exactly); and
collective counts (ours: len of sharded.comms per op; real: sharded.comm_counts, names mapped
all_gather_into_tensor->all_gather, reduce_scatter_tensor->reduce_scatter, all_to_all_single /
shard_dim_alltoall->all_to_all; a count difference explained by gloo running S->S all_to_all as an
all_gather is reported as agreement with a note). Prints a JSON summary: per-case list of differences.
"""

import argparse
import collections
import json
import re
import sys

COMM_MAP = {
    "all_gather_into_tensor": "all_gather", "all_gather": "all_gather", "allgather_": "all_gather",
    "_allgather_base_": "all_gather",
    "reduce_scatter_tensor": "reduce_scatter", "reduce_scatter": "reduce_scatter", "_reduce_scatter_base_": "reduce_scatter",
    "all_reduce": "all_reduce", "allreduce_": "all_reduce",
    "all_to_all_single": "all_to_all", "all_to_all": "all_to_all", "shard_dim_alltoall": "all_to_all", "alltoall_base_": "all_to_all",
    "broadcast": "broadcast",
}


def comm_name(k):
    short = k.split(".")[-1]
    return COMM_MAP.get(short, short)


def ours_comms(o):
    c = collections.Counter()
    for x in o["sharded"].get("comms") or []:
        c[comm_name(x["op"])] += 1
    return dict(c)


def real_comms(o):
    c = collections.Counter()
    for k, v in (o["sharded"].get("comm_counts") or {}).items():
        c[comm_name(k)] += int(v)
    return dict(c)


def vclose(a, b):
    if a is None or b is None:
        return a is b
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if isinstance(x, str) or isinstance(y, str) or isinstance(x, bool) or isinstance(y, bool):
            if x != y:
                return False
        elif isinstance(x, int) and isinstance(y, int):
            if x != y:
                return False
        elif abs(float(x) - float(y)) > 1e-6 + 1e-5 * abs(float(y)):
            return False
    return True


def first_diff(a, b):
    if a is None or b is None:
        return None
    if len(a) != len(b):
        return {"len": [len(a), len(b)]}
    for i, (x, y) in enumerate(zip(a, b)):
        if not vclose([x], [y]):
            return {"index": i, "ours": x, "real": y}
    return None


def first_line(s):
    return None if s is None else s.split("\n")[0]


def key_of(o):
    c = dict(o["case"])
    c.pop("tensors", None)
    return json.dumps(c, sort_keys=True)


def compare_case(ours, real):
    diffs = []
    so, sr = ours["sharded"], real["sharded"]
    if so["ok"] != sr["ok"]:
        diffs.append({"what": "ok", "ours": so["ok"], "real": sr["ok"],
                      "ours_error": so.get("error"), "real_error": {k: (sr.get("error") or {}).get(k) for k in ("kind", "message")} if sr.get("error") else None})
    elif not so["ok"]:
        eo, er = so.get("error") or {}, sr.get("error") or {}
        if eo.get("kind") != er.get("kind"):
            diffs.append({"what": "error_kind", "ours": eo.get("kind"), "real": er.get("kind"),
                          "ours_message": first_line(eo.get("message")), "real_message": first_line(er.get("message"))})
        elif first_line(eo.get("message")) != first_line(er.get("message")):
            diffs.append({"what": "error_message", "kind": eo.get("kind"), "ours": first_line(eo.get("message")),
                          "real": first_line(er.get("message"))})
    if so["ok"] and sr["ok"]:
        for name in sorted(set(so["outputs"]) | set(sr["outputs"])):
            a, b = so["outputs"].get(name), sr["outputs"].get(name)
            if a is None or b is None:
                diffs.append({"what": "output_missing", "output": name, "ours": a is not None, "real": b is not None})
                continue
            for f in ("placements", "global_shape", "rank_global_shapes", "local_shapes", "dtype"):
                if a.get(f) != b.get(f):
                    diffs.append({"what": f, "output": name, "ours": a.get(f), "real": b.get(f)})
            if not vclose(a.get("values"), b.get("values")):
                diffs.append({"what": "values", "output": name, "first": first_diff(a.get("values"), b.get("values"))})
    co, cr = ours_comms(ours), real_comms(real)
    note = None
    if co != cr:
        # gloo has no all_to_all for DTensor's shard_dim_alltoall: it runs an all_gather + local chunk
        alt = collections.Counter(co)
        n = alt.pop("all_to_all", 0)
        if n:
            alt["all_gather"] += n
        if dict(alt) == cr:
            note = "gloo: ours all_to_all == real all_gather"
        else:
            diffs.append({"what": "comms", "ours": co, "real": cr})
    return diffs, note


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ours")
    ap.add_argument("real")
    ap.add_argument("--label", default="")
    ap.add_argument("--json")
    a = ap.parse_args()
    ours = [json.loads(l) for l in open(a.ours) if l.strip()]
    real = [json.loads(l) for l in open(a.real) if l.strip()]
    by_key = collections.defaultdict(list)
    for r in real:
        by_key[key_of(r)].append(r)
    res = []
    for i, o in enumerate(ours):
        cands = by_key.get(key_of(o)) or []
        r = cands.pop(0) if cands else (real[i] if i < len(real) else None)
        if r is None:
            res.append({"case_file": None, "diffs": [{"what": "missing_real"}]})
            continue
        d, note = compare_case(o, r)
        res.append({"case_file": r["pytorch"].get("case_file"), "diffs": d, "note": note})
    out = {"label": a.label, "n": len(res), "agree": sum(1 for x in res if not x["diffs"]), "cases": res}
    s = json.dumps(out, indent=1)
    if a.json:
        open(a.json, "w").write(s)
    else:
        print(s)


if __name__ == "__main__":
    main()
