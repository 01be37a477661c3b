"""Summaries of recorded MoE outcomes (stdlib only).

    python -m moe_recorder.summary counts OUTCOMES...   # cases per (revision, torch, backend, EP, SP, world)
    python -m moe_recorder.summary errors OUTCOMES...   # every distinct error text, with its stage and where
    python -m moe_recorder.summary comms OUTCOMES...    # rank 0's collectives per configuration class
    python -m moe_recorder.summary table OUTCOMES...    # markdown tables per backend and configuration class
"""

import collections
import json
import re
import sys


def load(paths):
    for p in paths:
        with open(p) as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)


def key(o):
    c = o["case"]
    s = c["subject"]
    w = 1
    for x in c["mesh"]["shape"]:
        w *= x
    return (s["revision"], o["pytorch"].get("torch"), s["backend"], "EP" if s["parallel"]["ep"] > 1 else "noEP",
            "SP" if s["parallel"]["sp"] else "noSP", w)


def counts(paths):
    tab = collections.Counter()
    ok = collections.Counter()
    for o in load(paths):
        k = key(o)
        tab[k] += 1
        ok[k] += bool(o["outcome"]["ok"])
    print("revision  torch    backend          EP    SP    world  cases  ok")
    for k in sorted(tab, key=lambda k: tuple(str(x) for x in k)):
        print(f"{k[0]:9s} {str(k[1]):8s} {k[2]:16s} {k[3]:5s} {k[4]:5s} {k[5]:5d}  {tab[k]:5d}  {ok[k]:3d}")
    print(f"total {sum(tab.values())} cases, {sum(ok.values())} ok")


def normalize(msg):
    msg = re.sub(r"\[127\.0\.0\.1\]:\d+", "[127.0.0.1]:PORT", msg)
    msg = re.sub(r"\b\d+(\.\d+)? s\b", "N s", msg)
    return msg


def errors(paths):
    seen = collections.OrderedDict()
    for o in load(paths):
        r = o["outcome"]
        if r["ok"]:
            continue
        for e in r.get("rank_errors") or [r["error"]]:
            if e is None:
                continue
            msg = normalize(e.get("message") or "")
            if e.get("kind") in ("Hang", "Died"):
                msg = re.sub(r"rank \d+", "rank R", msg)
            k = (e.get("stage") or r.get("stage"), e.get("kind"), msg[:300], e.get("where"))
            seen.setdefault(k, collections.Counter())[o["case"]["subject"]["backend"]] += 1
    for (stage, kind, msg, where), c in seen.items():
        print(f"- [{stage}] {kind}: {msg}\n    at {where}; {dict(c)}")


def comms(paths):
    pats = collections.OrderedDict()
    for o in load(paths):
        if not o["outcome"]["ok"]:
            continue
        s = o["case"]["subject"]
        dp, cp, tp = o["case"]["mesh"]["shape"]
        cls = (s["backend"], "EP" if s["parallel"]["ep"] > 1 else "noEP", "SP" if s["parallel"]["sp"] else "noSP",
               "tp>1" if tp > 1 else "tp=1", "shared" if s["dims"].get("shared_hidden") else "noshared",
               "dp/cp>1" if dp * cp > 1 else "dp=cp=1", "lb" if s.get("load_balance_coeff") else "nolb")
        seq = []
        for c in o["outcome"]["comms"][0]:
            if c["phase"] == "parallelize":
                continue
            seq.append(f"{c['phase'][0]}:{c['op']}@{'|'.join(c.get('axes') or ['?'])}")
        pats.setdefault(cls, collections.Counter())[" ".join(seq)] += 1
    for cls, c in pats.items():
        print(" ".join(cls))
        for seq, n in c.most_common(3):
            print(f"   {n:3d}x {seq}")


def table(paths):
    """Markdown tables for docs/crosscheck-moe.md: outcomes per backend and configuration class."""
    rows = list(load(paths))
    backends = sorted({o["case"]["subject"]["backend"] for o in rows}, key=lambda b: ["spmd_types", "partial_dtensor",
                                                                                     "full_dtensor"].index(b))

    def cls_counts(title, fn):
        tab = collections.defaultdict(collections.Counter)
        for o in rows:
            b = o["case"]["subject"]["backend"]
            k = fn(o)
            if k is None:
                continue
            tab[k][b] += 1
            tab[k][b + ":ok"] += bool(o["outcome"]["ok"])
        print(f"| {title} | " + " | ".join(f"{b} (ran)" for b in backends) + " |")
        print("|---|" + "---|" * len(backends))
        for k in sorted(tab, key=str):
            print(f"| {k} | " + " | ".join(f"{tab[k][b]} ({tab[k][b + ':ok']})" for b in backends) + " |")
        print()

    def sub(o):
        return o["case"]["subject"]

    def world(o):
        w = 1
        for x in o["case"]["mesh"]["shape"]:
            w *= x
        return w
    cls_counts("all", lambda o: "all")
    cls_counts("EP x SP", lambda o: ("EP on" if sub(o)["parallel"]["ep"] > 1 else "EP off") + ", " +
               ("SP on" if sub(o)["parallel"]["sp"] else "SP off"))
    cls_counts("world", lambda o: f"{world(o)} ranks")
    cls_counts("(dp, cp, tp)", lambda o: "(%d, %d, %d)" % tuple(o["case"]["mesh"]["shape"]))
    cls_counts("ep", lambda o: f"ep {sub(o)['parallel']['ep']}" + (" < tp" if 1 < sub(o)["parallel"]["ep"] <
                                                                   o["case"]["mesh"]["shape"][2] else ""))
    cls_counts("dtype", lambda o: o["case"]["dtype"])
    cls_counts("backward", lambda o: "backward" if sub(o)["backward"] else "forward only")
    cls_counts("load_balance_coeff", lambda o: "set (hook)" if sub(o)["load_balance_coeff"] else "null")
    cls_counts("tokens", lambda o: "T = 1" if sub(o)["dims"]["batch"] * sub(o)["dims"]["seq"] == 1 else (
        "L/cp not divisible by tp" if (sub(o)["dims"]["seq"] // o["case"]["mesh"]["shape"][1]) %
        o["case"]["mesh"]["shape"][2] else "even"))
    cls_counts("shared experts", lambda o: "shared" if sub(o)["dims"].get("shared_hidden") else "none")
    cls_counts("typecheck", lambda o: "on" if sub(o).get("typecheck") else None)
    cls_counts("stage of the error", lambda o: None if o["outcome"]["ok"] else
               f"{o['outcome']['stage']}: {o['outcome']['error']['kind']}")
    empty = 0
    for o in rows:
        t = (o["outcome"].get("outputs") or {}).get("tokens_per_expert", {}).get("value")
        if o["outcome"]["ok"] and t and any(float(v) == 0 for v in t["values"]):
            empty += 1
    print(f"Outcomes that ran with at least one expert receiving no token: {empty}.")


def main(argv=None):
    argv = argv or sys.argv[1:]
    cmd, paths = argv[0], argv[1:]
    {"counts": counts, "errors": errors, "comms": comms, "table": table}[cmd](paths)


if __name__ == "__main__":
    main()
