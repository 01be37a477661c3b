"""Turns the raw records of the op-level fact checks (docs/pytorch-checks/out/*.jsonl: per case a
DebugMode `trace` of the DTensor-level aten calls and the case's outcome, recorded on real torch
2.12.1 and 2.13.0, one process with fake PG + LocalTensorMode and one gloo process per rank) into
two fixtures for tests/crosscheck.rs:

- ops-checks-t2121-t2130.jsonl: one line per distinct aten call, in the format of trace_to_ops.py
  (plus each tensor argument's dtype, which DebugMode prints), leaving out the calls that
  ops-t2121-t2130-t2140.jsonl already holds. `out` is null where DebugMode printed no output
  line (its C++ fast path records none) unless the call is the case's last and the case's own
  result gives it (`out_from: "case"`); `error` is set where sharding propagation of the call
  raised.
- cases-checks-t2121-t2130.jsonl: one line per distinct traced case: its calls (same format) and
  its outcome (placements, global and per-rank local shapes, dtype, collectives counted by
  CommDebugMode, or the exception type and first line), with the releases, modes and files that
  recorded it. The successful `dt.redistribute()` cases (no aten call, most traced empty) are
  cases too, with the pseudo-call `redistribute` read off their label.

Usage: python3 checks_to_ops.py ../../docs/pytorch-checks/out/*.jsonl (writes both files next to
this script and prints counts to stderr)."""
import json
import os
import re
import sys

from trace_to_ops import parse_val, split_top

HERE = os.path.dirname(os.path.abspath(__file__))
REL = {"2.12.1": "torch-2.12", "2.13.0": "torch-2.13"}
DTYPES = {"f32": "float32", "b8": "bool", "i64": "int64", "i32": "int32", "bf16": "bfloat16", "f16": "float16",
          "f64": "float64"}
SKIP = {"aten.size.default", "aten.detach.default"}
TENSOR = re.compile(r"^dt: (\w+)\[([0-9, ]*)\]\| (.*)$")
TOKEN = re.compile(r"(R|S\(\d+\)|_S\(\d+, \d+\)|P\(\w+\))(?:\[(\d+)\])?")
MESH = re.compile(r"^([12])D\(([0-9,]+)\) ")
IMPLICIT = re.compile(r"redistribute_input \[implicit\] \((\d+), (.+?) -> (.+?)\); redistribute_input\(")


def placements(s, ndim):
    """DebugMode's concatenated notation (`RS(1)`, `S(0)[0]S(0)[1]`, `_S(0, 2)`) as a list."""
    toks = list(TOKEN.finditer(s))
    if "".join(t.group(0) for t in toks) != s or len(toks) != ndim:
        raise ValueError(f"placements {s!r} on a {ndim}-D mesh")
    # `[i]` is the order of mesh dims sharding one tensor dim; only the default order occurs.
    orders = {}
    for t in toks:
        if t.group(2) is not None:
            key = re.sub(r"_?S\((\d+).*", r"\1", t.group(1))
            orders.setdefault(key, []).append(int(t.group(2)))
    if any(o != sorted(o) for o in orders.values()):
        raise ValueError(f"non-default shard order in {s!r}")
    return [t.group(1).replace(", ", ",") for t in toks]


def arg(v, ndim):
    m = TENSOR.match(v)
    if m:
        shape = [int(x) for x in m.group(2).split(",")] if m.group(2).strip() else []
        return {"t": placements(m.group(3), ndim), "shape": shape, "dtype": DTYPES[m.group(1)]}
    return parse_val(v)


def step(s, ndim):
    """One DebugMode line: `aten::op(args)[ -> out][ {redistributions}]`."""
    name, rest = s.split("(", 1)
    depth, end = 1, 0
    for i, ch in enumerate(rest):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth == 0:
            end = i
            break
    op = "aten." + name[len("aten::"):]
    if op.count(".") == 1:
        op += ".default"
    tail = rest[end + 1:]
    out = None
    m = re.match(r"^ -> (.*?)(?: \{.*\})?$", tail)
    if m:
        outs = m.group(1)
        items = [x.strip("'") for x in split_top(outs[1:-1])] if outs.startswith("(") else [outs]
        out = [{"t": placements(x, ndim)} for x in items]
    redist = [(int(i), f, t) for i, f, t in IMPLICIT.findall(tail)]
    if len(redist) != tail.count("[implicit]"):
        raise ValueError(f"unparsed redistribution in {s!r}")
    redist = [["[" + ", ".join(placements(f, ndim)) + "]", "[" + ", ".join(placements(t, ndim)) + "]"]
              for _, f, t in sorted(redist)]
    return {"op": op, "args": [arg(a, ndim) for a in split_top(rest[:end])], "out": out, "redist": redist}


def outcome(r):
    if not r["ok"]:
        o = {"ok": False, "exc": r["exc"], "first_line": r["first_line"]}
        if "per_rank" in r:
            o["per_rank"] = [[e, msg.split("\n")[0]] for e, msg in r["per_rank"]]
        return o
    outs = r["out"] if isinstance(r["out"], list) else [r["out"]]
    keep = ("placements", "shape", "local_shapes", "dtype", "rank_global_shapes")
    return {"ok": True, "outs": [{k: o[k] for k in keep if k in o} for o in outs], "comms": r["comms"]}


def case_steps(r, ndim):
    steps = [step(s, ndim) for s in r["trace"]]
    steps = [s for s in steps if s["op"] not in SKIP]
    if not steps:
        return steps
    last = steps[-1]
    msg = r.get("msg", "")
    failed = re.search(r"\n\nSharding propagation failed for (aten\.[\w.]+)\(", msg)
    if failed:
        if failed.group(1) != last["op"]:
            raise ValueError(f"{r['case']}: failure in {failed.group(1)}, last call {last['op']}")
        last["error"] = [r["exc"], r["first_line"]]
    elif r["ok"] and last["out"] is None:
        outs = r["out"] if isinstance(r["out"], list) else [r["out"]]
        n_out = 2 if last["op"] in ("aten.topk.default", "aten.sort.stable") else 1
        if len(outs) == n_out and all(isinstance(o, dict) and "placements" in o for o in outs):
            last["out"] = [{"t": o["placements"]} for o in outs]
            last["out_from"] = "case"
    return steps


def key(rec, with_dtype):
    args = [{k: v for k, v in a.items() if with_dtype or k != "dtype"} for a in rec["args"]]
    return json.dumps([rec["release"], rec["mesh"], rec["op"], args], sort_keys=True)


def existing_ops():
    seen = {}
    for line in open(os.path.join(HERE, "ops-t2121-t2130-t2140.jsonl")):
        rec = json.loads(line)
        seen.setdefault(key(rec, False), []).append(rec)
    return seen


def same_decision(a, b):
    """Two records of one call agree where both are known."""
    if (a.get("error") is None) != (b.get("error") is None):
        return a.get("error") is None and a["out"] is None and not a["redist"] or \
            b.get("error") is None and b["out"] is None and not b["redist"]
    if a.get("error"):
        return a["error"] == b["error"]
    outs = a["out"] is None or b["out"] is None or [o["t"] for o in a["out"]] == [o["t"] for o in b["out"]]
    return outs and a["redist"] == b["redist"]


def read(paths):
    """Every traced case as (file, mode, release, mesh, label, steps, outcome)."""
    for path in paths:
        name = os.path.basename(path)
        mode = "gloo" if ".gloo." in name else "local"
        rel = None
        for line in open(path):
            r = json.loads(line)
            if "torch" in r:
                rel = REL[r["torch"].split("+")[0]]
                continue
            m = MESH.match(r["case"])
            if name.startswith("redistribute.") and not r.get("trace") and r["ok"] and "->" in r["case"]:
                yield (name, mode, rel) + redistribute_case(r)
                continue
            if not r.get("trace") or not m:
                continue
            mesh = [int(x) for x in m.group(2).split(",")]
            yield name, mode, rel, mesh, r["case"], case_steps(r, len(mesh)), outcome(r)


def redistribute_case(r):
    """A `dt.redistribute()` case (no aten call): its label names the move, e.g. `P(sum)->S(0)
    uneven 5 rows` or `2D(2,2) (P,P)->(S(0),S(0)) 5 rows`; the input has the output's shape and
    dtype. The step is the pseudo-call `redistribute` with the target in `to`."""
    m = MESH.match(r["case"])
    mesh = [int(x) for x in m.group(2).split(",")] if m else [2]
    move = r["case"][m.end() if m else 0:].split(" ")[0]

    def side(x):
        items = split_top(x[1:-1]) if x.startswith("(") else [x]
        return ["P(sum)" if p == "P" else p for p in items]

    src, dst = (side(x) for x in move.split("->"))
    if len(src) != len(mesh) or len(dst) != len(mesh):
        raise ValueError(f"redistribute case {r['case']!r}")
    arg = {"t": src, "shape": r["out"]["shape"], "dtype": r["out"]["dtype"]}
    return mesh, r["case"], [{"op": "redistribute", "args": [arg], "to": dst}], outcome(r)


def artifacts(rows):
    """(file kind, release, label) of the cases that fail only in the one-process run while gloo
    ranks succeed: LocalTensorMode artifacts (docs/pytorch-facts.md section 15), not facts."""
    ok = {}
    for name, mode, rel, _, label, _, out in rows:
        ok[(name.split(".")[0], rel, label, mode)] = out["ok"]
    return {k[:3] for k, v in ok.items() if k[3] == "local" and not v and ok.get(k[:3] + ("gloo",))}


def convert_cases(rows):
    bad, cases = artifacts(rows), {}
    for name, mode, rel, mesh, label, steps, out in rows:
        ck = json.dumps([mesh, steps, out], sort_keys=True)
        c = cases.setdefault(ck, {"src": [], "releases": [], "modes": [], "mesh": mesh, "case": label,
                                  "steps": steps, "outcome": out})
        for field, v in (("src", name), ("releases", rel), ("modes", mode)):
            c[field] += [v] if v not in c[field] else []
        if (name.split(".")[0], rel, label) in bad and mode == "local":
            c["artifact"] = "LocalTensorMode only: the gloo ranks succeed"
    return list(cases.values())


def convert_ops(rows):
    old = existing_ops()
    ops, conflicts, n_calls, n_in_old = {}, [], 0, 0
    for name, _, rel, mesh, label, steps, _ in rows:
        for s in (s for s in steps if s["op"] != "redistribute"):
            n_calls += 1
            rec = {"src": name, "release": rel, "case": label, "mesh": mesh, **s}
            prior = old.get(key(rec, False), [])
            if prior:
                n_in_old += 1
                conflicts += [(rec, p) for p in prior if not same_decision(rec, p)]
                continue
            k = key(rec, True)
            have = ops.get(k)
            if have is None:
                ops[k] = rec
            elif not same_decision(have, rec):
                conflicts.append((rec, have))
            elif have["out"] is None and rec["out"] is not None or not have.get("error") and rec.get("error"):
                ops[k] = rec
    ops = list(ops.values())
    known = sum(r["out"] is not None or bool(r.get("error")) for r in ops)
    print(f"{n_calls} traced calls; {n_in_old} already in ops-t2121-t2130-t2140.jsonl; {len(ops)} distinct new "
          f"({known} with a known output or error)", file=sys.stderr)
    for a, b in conflicts:
        print(f"CONFLICT {a['src']} [{a['case']}] {a['op']}: {a} vs {b}", file=sys.stderr)
    return ops


def main(paths):
    rows = list(read(paths))
    for name, recs in (("ops-checks-t2121-t2130.jsonl", convert_ops(rows)),
                       ("cases-checks-t2121-t2130.jsonl", convert_cases(rows))):
        with open(os.path.join(HERE, name), "w") as f:
            for rec in recs:
                f.write(json.dumps(rec, allow_nan=False) + "\n")
        print(f"{name}: {len(recs)} lines", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
