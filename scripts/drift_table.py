#!/usr/bin/env python3
"""The table of scripts/drift: the fact checks' records of a release against those of the rule
set's release (per op family), and confirm's results (per verdict class); saves the smallest
differing case. Usage: drift_table.py OUT BASE_FACTS VERSION BASE RULES T_FACTS T_CASES T_ALL.
Exit 1 when anything differs."""
import glob, json, os, shutil, sys
out, base_dir, ver, base, rules, t_facts, t_cases, t_all = sys.argv[1:9]

def records(path):
    recs = {}
    for line in open(path):
        d = json.loads(line)
        if "case" in d:
            recs[d["case"]] = d
    return recs

def key(d):
    """What a fact case's outcome is made of: the exception type and first line, or per output the
    placements, global and per-rank local shapes and dtype, plus the collectives and the value match."""
    if not d.get("ok"):
        return ("error", d.get("exc"), d.get("first_line"))
    outs = d.get("out")
    outs = outs if isinstance(outs, list) else [outs or {}]
    fields = ("placements", "shape", "local_shapes", "dtype")
    return ("ok", [[o.get(f) for f in fields] for o in outs], d.get("comms"), d.get("match"))

rows, differ = [], 0
fact_diffs = []
for f in sorted(glob.glob(os.path.join(out, "facts", "*.jsonl"))):
    name = os.path.basename(f)[: -len(".jsonl")]
    new, old = records(f), records(os.path.join(base_dir, name + ".jsonl"))
    agree = sum(1 for c in new if c in old and key(new[c]) == key(old[c]))
    diff = [c for c in new if c in old and key(new[c]) != key(old[c])]
    only = len(set(new) ^ set(old))
    rows.append(("facts", name.replace("check_", ""), agree, len(diff) + only))
    differ += len(diff) + only
    fact_diffs += [(name, c, key(old[c]), key(new[c])) for c in diff]

results = [json.loads(l) for l in open(os.path.join(out, "confirm.jsonl")) if l.strip()]


def is_backward(path):
    c = json.load(open(path))
    c = c.get("case", c)
    return bool(c.get("backward") or (c.get("subject") or {}).get("backward"))


by_class = {}
differing = []
for r in results:
    kind = "backward" if is_backward(r["file"]) else "forward"
    src = "recorded" if "/recorded/" in r["file"] else "fresh"
    classes = sorted({c.split(":")[0] for c in (r.get("ours") or []) + (r.get("real") or [])}) or ["none"]
    for c in classes:
        a = by_class.setdefault((src, kind, c), [0, 0, 0])
        a[0 if r["status"] == "agrees" else 1 if r["status"] == "differs" else 2] += 1
    if r["status"] == "differs":
        differing.append(r)
for (src, kind, c), (a, d, n) in sorted(by_class.items()):
    rows.append((f"cases/{src}/{kind}", c, a, d, n))
differ += len(differing)
notrun = sum(1 for r in results if r["status"] not in ("agrees", "differs"))


def size(r):
    mesh = r.get("outcome", {}).get("case", {}).get("mesh", {}).get("shape", [])
    n = 1
    for s in mesh:
        n *= s
    return (n, os.path.getsize(r["file"]))

lines = [f"torch {ver} against {rules} (the rule set read from {base})", "",
         "| what | op family / verdict class | agree | differ | not run |", "|---|---|---:|---:|---:|"]
for r in rows:
    lines.append("| " + " | ".join(str(x) for x in r) + (" | 0 |" if len(r) == 4 else " |"))
lines.append("")
lines.append(f"cases: {len(results)} ({sum(1 for r in results if '/recorded/' in r['file'])} recorded, "
             f"{sum(1 for r in results if '/fresh/' in r['file'])} fresh); a case counts once per verdict class it has")
if differing:
    s = min(differing, key=size)
    shutil.copy(s["file"], os.path.join(out, "smallest-differing-case.json"))
    lines.append(f"smallest differing case: {out}/smallest-differing-case.json ({s['file']}): "
                 + "; ".join(str(x) for x in s.get("diffs", [])[:3]))
for name, c, o, n in fact_diffs[:10]:
    lines.append(f"fact differs: {name}: {c}: {base} {o} -> {ver} {n}")
lines.append(f"verdict: {'DIFFERS' if differ else 'agrees'} ({differ} differing, {notrun} not run); "
             f"time: facts {t_facts} s, cases {t_cases} s, all {t_all} s")
text = "\n".join(lines)
print(text)
open(os.path.join(out, "drift.md"), "w").write(text + "\n")
sys.exit(1 if differ else 0)
