"""Build docs/pytorch-facts.md from facts_template.md and the recorded outputs in out/.

Placeholders in the template:
    {{table:NAME:REGEX}}   table of the cases of out/NAME.*.jsonl whose label matches REGEX
                           (columns: case | torch 2.12.1 | torch 2.13.0)
    {{errors}}             catalogue of every distinct exception text referenced by the tables
Results come from the gloo runs (one process per rank) when present, else from the single-process
runs (fake PG + LocalTensorMode); cells where the two modes disagree are flagged.
Run: python render.py   (any python3; no torch needed)
"""
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "out")
VERS = [("t2121", "2.12.1"), ("t2130", "2.13.0")]


def load(name, v, gloo):
    p = os.path.join(OUT, f"{name}.{'gloo.' if gloo else ''}{v}.jsonl")
    d = {}
    if not os.path.exists(p):
        return None
    for line in open(p):
        line = line.strip()
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        if "case" in r:
            d[r["case"]] = r
    return d


ERRORS = {}  # message -> id


def code(text):
    """Inline code span that survives backticks inside the text."""
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def err_id(exc, msg):
    key = (exc, msg)
    if key not in ERRORS:
        ERRORS[key] = f"E{len(ERRORS) + 1}"
    return ERRORS[key]


def _read_balanced(text, i):
    """Read from text[i] up to (not including) the first ',' or ')' at parenthesis depth 0."""
    depth, j = 0, i
    while j < len(text):
        c = text[j]
        if c in "([":
            depth += 1
        elif c in ")]":
            if depth == 0:
                break
            depth -= 1
        elif c == "," and depth == 0:
            break
        j += 1
    return text[i:j]


def short_trace(trace):
    steps = []
    for t in trace or []:
        red = ""
        k = t.find(" {redistribute")
        if k >= 0 and t.endswith("}"):
            red, t = t[k + 2:-1], t[:k]
        out = None
        if " -> " in t:
            t, out = t.rsplit(" -> ", 1)
        op = t.split("(", 1)[0].replace("aten::", "")
        ins, i = [], 0
        while True:
            i = t.find("| ", i)
            if i < 0:
                break
            ins.append(_read_balanced(t, i + 2).strip())
            i += 2
        s = f"{op}({', '.join(ins)})"
        if out:
            s += f"→{out}"
        trs, i = [], 0
        while True:
            i = red.find("trace: ", i)
            if i < 0:
                break
            trs.append(_read_balanced(red, i + 7).strip())
            i += 7
        if trs:
            s += " [" + "; ".join(trs) + "]"
        steps.append(s)
    # drop the uninteresting transpose of the weight
    steps = [s for s in steps if not s.startswith("t(")]
    return "; ".join(steps)


def fmt_out(o):
    if isinstance(o, list):
        return " / ".join(fmt_out(x) for x in o)
    if isinstance(o, dict) and "placements" in o:
        s = f"({', '.join(o['placements'])}) {o['shape']} loc {o['local_shapes']} {o['dtype']}"
        if "rank_global_shapes" in o:
            s += f" RANK GLOBAL SHAPES {o['rank_global_shapes']}"
        return s
    return str(o)


def comms_str(c):
    if not c:
        return "no comm"
    return ", ".join(f"{k.split('.')[-1]}×{v}" for k, v in c.items())


def cell(r, with_trace=True):
    if r is None:
        return "—"
    if r["ok"]:
        s = fmt_out(r["out"]) + "; " + comms_str(r.get("comms"))
        m = r.get("match")
        if m is False:
            s += "; **VALUES DIFFER from plain torch**"
        elif m not in (True, None):
            s += f"; match={m}"
    else:
        eid = err_id(r["exc"], r["msg"])
        s = f"{r['exc']} [{eid}] {code(r['first_line'])}"
        if r.get("per_rank"):
            s += " (ranks differ: " + "; ".join(
                f"rank {i} {e[0]} [{err_id(e[0], e[1])}] {code(e[1].splitlines()[0])}"
                for i, e in enumerate(r["per_rank"])) + ")"
    if with_trace and r.get("trace"):
        tr = short_trace(r["trace"])
        # a single op without redistribution adds nothing to the outcome columns
        if tr and (";" in tr or "[" in tr or not r["ok"]):
            s += f"<br>path: {tr}"
    return s.replace("|", "\\|")


def strip(r):
    if r is None:
        return None
    r = dict(r)
    for k in ("trace", "tb", "per_rank"):
        r.pop(k, None)
    return r


def table(name, regex):
    rx = re.compile(regex)
    res = {}
    for v, _ in VERS:
        g = load(name, v, True)
        l = load(name, v, False)
        res[v] = (g, l)
    labels = []
    for v, _ in VERS:
        for src in res[v]:
            if src:
                for k in src:
                    if rx.search(k) and k not in labels:
                        labels.append(k)
    rows = ["| case | torch 2.12.1 | torch 2.13.0 |", "|---|---|---|"]
    for k in labels:
        cells = []
        for v, _ in VERS:
            g, l = res[v]
            r = (g or {}).get(k) or (l or {}).get(k)
            c = cell(r)
            if g and l and k in g and k in l and strip(g[k]) != strip(l[k]):
                c += f"<br>*(one-process LocalTensorMode run differs: {cell(l[k], False)})*"
            elif not g or k not in (g or {}):
                c += " *(LocalTensorMode only)*"
            cells.append(c)
        if cells[0] == cells[1]:
            cells[1] = "same"
        rows.append(f"| {k} | {cells[0]} | {cells[1]} |")
    return "\n".join(rows)


def errors():
    lines = ["| id | type | str(e) verbatim (JSON-escaped) |", "|---|---|---|"]
    for (exc, msg), i in sorted(ERRORS.items(), key=lambda kv: int(kv[1][1:])):
        cut = msg.find("\nException raised from")
        m = json.dumps(msg if cut < 0 else msg[:cut])
        if cut >= 0:
            m += " (followed by a C++ backtrace)"
        if len(m) > 3000:
            m = m[:3000] + '..."  (truncated; C++ stack trace follows in the raw output)'
        lines.append(f"| {i} | {exc} | {code(m).replace('|', chr(92) + '|')} |")
    return "\n".join(lines)


def main():
    tpl = open(os.path.join(HERE, "facts_template.md")).read()
    out = re.sub(r"\{\{table:([\w]+):(.*?)\}\}", lambda m: table(m.group(1), m.group(2)), tpl)
    out = out.replace("{{errors}}", errors())
    dst = os.path.join(HERE, "..", "pytorch-facts.md")
    open(dst, "w").write(out)
    print(f"wrote {os.path.normpath(dst)} ({len(out)} chars, {len(ERRORS)} distinct errors)")


if __name__ == "__main__":
    main()
