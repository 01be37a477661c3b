#!/usr/bin/env python3
"""backward_summary.py: summarise backward_oracle.py outcome lines (no torch needed).

    python3 backward_summary.py OUTCOMES.jsonl [...] [--cases]

Per case: boundary, EP, sp, sbe, etp, tp, loss class, and per gradient (gate.weight, gate.bias, x): placement,
r = <reduced, ref> / <ref, ref>, whether the reduced value equals the reference (f32: |g - ref| <= 1e-5 |ref| +
1e-6 max|ref|; bf16: 2e-2 relative to max|ref|), and whether R-labelled locals differ across ranks ("R!=").
Then a table grouped by (boundary, ep, sbe/etp where they change the loss class) with the distinct outcomes, and the
backward collectives seen.
"""

import json
import math
import sys
from collections import OrderedDict, defaultdict


def num(v):
    if isinstance(v, str):
        return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[v]
    return float(v)


def judge(g, ref, dtype):
    a = [num(v) for v in g["reduced"]] if g.get("reduced") is not None else None
    b = [num(v) for v in ref["values"]]
    if a is None or len(a) != len(b):
        return None, False
    rr = sum(y * y for y in b)
    gr = sum(x * y for x, y in zip(a, b))
    ratio = gr / rr if rr > 0 else (1.0 if all(x == 0 for x in a) else math.inf)
    mx = max((abs(y) for y in b), default=0.0)
    if dtype == "bf16":
        eq = all(abs(x - y) <= 2e-2 * mx + 1e-2 * abs(y) for x, y in zip(a, b))
    else:
        eq = all(abs(x - y) <= 1e-5 * abs(y) + 1e-6 * mx + 1e-30 for x, y in zip(a, b))
    return ratio, eq


def r_unequal(g):
    if g["placements"] != ["R"]:
        return None
    locs = [l["values"] for l in g["locals"]]
    return any(l != locs[0] for l in locs[1:])


def summarise(lines):
    rows = []
    for o in lines:
        c, bw = o["case"], o["backward"]
        b = c["backward"]
        row = OrderedDict(boundary=b["boundary"], ep=int(b["ep"]), sp=int(b["sp"]), sbe=int(b["score_before_experts"]),
                          etp=b["etp"], tp=c["mesh"]["shape"][0], B=c["dims"]["batch"], L=c["dims"]["seq"],
                          cls=bw["loss_class"], dtype=c["dtype"], ok=bw["ok"],
                          err=None if bw["ok"] else f'{bw["error"]["kind"]}: {bw["error"]["message"][:90]}',
                          comms=bw.get("comm_counts", {}), grads={})
        if bw["ok"]:
            for name, g in bw["grads"].items():
                if g is None:
                    row["grads"][name] = None
                    continue
                ratio, eq = judge(g, bw["reference"][name], c["dtype"])
                row["grads"][name] = {"pl": "/".join(g["placements"]), "ratio": ratio, "eq": eq,
                                      "runeq": r_unequal(g)}
        rows.append(row)
    return rows


def fmt_grad(gs):
    if gs is None:
        return "-"
    s = gs["pl"]
    s += " ok" if gs["eq"] else f" r={gs['ratio']:.3g}"
    if gs["runeq"]:
        s += " R!="
    return s


def main():
    paths = [a for a in sys.argv[1:] if not a.startswith("--")]
    show_cases = "--cases" in sys.argv
    for p in paths:
        lines = [json.loads(l) for l in open(p) if l.strip()]
        rows = summarise(lines)
        ver = lines[0]["pytorch"]["version"] if lines else "?"
        print(f"### {p}: torch {ver}, {len(rows)} cases, {sum(r['ok'] for r in rows)} ok")
        if show_cases:
            for r in rows:
                g = r["grads"]
                print(f"{r['boundary']:10} ep{r['ep']} sp{r['sp']} sbe{r['sbe']} etp{r['etp']} tp{r['tp']} "
                      f"B{r['B']} L{r['L']} {r['cls']:10} {r['dtype']:4} "
                      + (r["err"] if not r["ok"] else
                         f"W[{fmt_grad(g.get('gate.weight'))}] b[{fmt_grad(g.get('gate.bias'))}] "
                         f"x[{fmt_grad(g.get('x'))}] comms={json.dumps(r['comms'])}"))
        groups = defaultdict(lambda: defaultdict(int))
        comms = defaultdict(lambda: defaultdict(int))
        for r in rows:
            key = (r["boundary"], r["ep"], r["cls"], r["sp"])
            if not r["ok"]:
                groups[key]["ERROR " + r["err"]] += 1
                continue
            if r["tp"] == 1:
                key = key + ("tp1",)
            desc = []
            for name in ("gate.weight", "gate.bias", "x"):
                gs = r["grads"].get(name)
                if gs is None:
                    continue
                ratio = "ok" if gs["eq"] else (f"r~{round(gs['ratio'], 2)}" if gs["ratio"] is not None else "?")
                desc.append(f"{name}:{gs['pl']} {ratio}{' R!=' if gs['runeq'] else ''}")
            groups[key]["; ".join(desc)] += 1
            comms[key][json.dumps(r["comms"], sort_keys=True)] += 1
        for key in sorted(groups):
            print(f"  {key}")
            for d, n in groups[key].items():
                print(f"      {n}x {d}")
            for cm, n in comms[key].items():
                print(f"      comms {n}x {cm}")


if __name__ == "__main__":
    main()
