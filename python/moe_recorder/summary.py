"""Summaries of recorded MoE outcomes (stdlib only).

    python -m moe_recorder.summary counts OUTCOMES...   # cases per (revision, torch, backend, EP, SP, world)
    python -m moe_recorder.summary errors OUTCOMES...   # every distinct error text, with its stage and where
    python -m moe_recorder.summary comms OUTCOMES...    # rank 0's collectives per configuration class
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


def main(argv=None):
    argv = argv or sys.argv[1:]
    cmd, paths = argv[0], argv[1:]
    {"counts": counts, "errors": errors, "comms": comms}[cmd](paths)


if __name__ == "__main__":
    main()
