"""Turns probe traces (probes/out_*.txt: every DTensor-level aten op with its input and output
placements and the dispatcher's input redistributions, recorded on real torch 2.12.1/2.13.0/2.14.0)
into one JSON line per distinct op call, for tests/crosscheck.rs's op-level replay.

Usage: python3 trace_to_ops.py probes/out_*.txt > ops-t2121-t2130-t2140.jsonl"""
import json, re, sys, os

REL = {"2.12.1": "torch-2.12", "2.13.0": "torch-2.13", "2.14.0": "torch-2.14"}
SKIP = {"aten.detach.default", "aten.size.default"}
DT = re.compile(r"^\[([^\]]*)\]\[([0-9, ]*)\]$")

def split_top(s):
    out, depth, cur = [], 0, ""
    for ch in s:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip()); cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out

def parse_val(v):
    m = DT.match(v)
    if m:
        ps = split_top(m.group(1)) if m.group(1).strip() else []
        shape = [int(x) for x in m.group(2).split(",")] if m.group(2).strip() else []
        return {"t": ps, "shape": shape}
    if "=" in v and not v.startswith("["):
        k, val = v.split("=", 1)
        return {"kw": k, "v": parse_val(val)}
    if v.startswith("torch."):
        return {"dtype": v[6:]}
    if v.startswith("T["):
        return {"plain": json.loads(v[1:])}
    if v in ("inf", "-inf"):
        return {"v": v}
    try:
        return {"v": json.loads(v.replace("True", "true").replace("False", "false"))}
    except Exception:
        return {"raw": v}

def parse_outs(s):
    return [parse_val(x) for x in split_top(s)]

SEEN = set()


def emit(rec):
    key = json.dumps({k: rec.get(k) for k in ("release", "mesh", "op", "args", "out", "redist", "error")}, sort_keys=True)
    if key not in SEEN:
        SEEN.add(key)
        print(json.dumps(rec, allow_nan=False))


def main(paths):
    for path in paths:
        name = os.path.basename(path)
        ver = re.search(r"(2\.1[234]\.[01])", name).group(1)
        mesh, case, pending = None, None, None
        lines = open(path).read().splitlines()
        def flush():
            nonlocal pending
            if pending:
                emit(pending)
            pending = None
        for line in lines:
            m = re.match(r"^=== mesh\(([0-9, ]+)\)\s*(.*?)\s+\(torch", line)
            if m:
                flush()
                mesh = [int(x) for x in m.group(1).split(",") if x.strip()]
                case = m.group(2)
                continue
            m = re.match(r"^=== (.*?)\s+\(torch", line)
            if m:
                # out_special names no mesh: every mesh dim has 2 ranks, the placements say how many.
                flush()
                case = m.group(1)
                mesh = "infer"
                # A _StridedShard built by from_local (not by a view) has no shard order, and every
                # redistribution of it costs inf; the simulator only meets view-made ones.
                if case.startswith("mm direct: x2 (8,4) [_S"):
                    mesh = None
                continue
            m = re.match(r"^    (aten\.[\w.]+)\((.*)\)( -> (.*))?$", line)
            if m and mesh:
                flush()
                op = m.group(1)
                if op in SKIP:
                    continue
                args = [parse_val(a) for a in split_top(m.group(2))]
                use = mesh
                if mesh == "infer":
                    use = [2] * len(next(a["t"] for a in args if "t" in a))
                pending = {"src": name, "release": REL[ver], "case": case, "mesh": use, "op": op,
                           "args": args, "out": parse_outs(m.group(4)) if m.group(4) else None, "redist": []}
                continue
            m = re.match(r"^       redistribute\[dispatch\] (\[.*\])->(\[.*\])$", line)
            if m and pending is not None:
                pending["redist"].append([m.group(1), m.group(2)])
                continue
            m = re.match(r"^    EXC (\w+): (.*)$", line)
            if m and pending is not None and pending["out"] is None:
                pending["error"] = [m.group(1), m.group(2)]
                flush()
                continue
            if line.startswith("       redistribute[") or line.startswith("    #") or line.startswith("  "):
                # another kind of event: the op before it is complete
                if not line.startswith("       redistribute[dispatch]"):
                    flush()
        flush()

if __name__ == "__main__":
    main(sys.argv[1:])
