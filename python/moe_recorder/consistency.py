"""Compares outcomes that share their tensors (data.intent "consistency:SEED:N") with the one-rank
outcome of the same group: assembled y, x_grad, gradients (after FSDP's duty), the global token
counts and the expert bias after the hook. Stdlib only.

    python -m moe_recorder.consistency OUTCOMES.jsonl..."""

import json
import sys

from .assemble import max_diff

# relative to the largest |value| of the output: beyond this it is not bf16 rounding of partial
# sums (bf16 keeps 8 bits, 2^-8 = 0.4%; a few partial sums each rounded stay well under 2%)
TOL = 0.02

NAMES = ("y", "x_grad", "grad.gate", "grad.w1", "grad.w2", "grad.w3", "grad.shared_w1", "grad.shared_w2",
         "grad.shared_w3", "tokens_per_expert", "expert_bias")


def label(o):
    s = o["case"]["subject"]
    p = s["parallel"]
    dp, cp, tp = o["case"]["mesh"]["shape"]
    return f"{s['backend']:15s} dp{dp}(r{p['dp_replicate']}) cp{cp} tp{tp} ep{p['ep']} sp={'on ' if p['sp'] else 'off'}"


def compare(paths):
    groups = {}
    for p in paths:
        for line in open(p):
            o = json.loads(line)
            intent = o["case"]["data"].get("intent", "")
            if intent.startswith("consistency:"):
                groups.setdefault(intent, []).append(o)
    rows = []
    for key, outs in groups.items():
        ref = next((o for o in outs if o["case"]["mesh"]["shape"] == [1, 1, 1] and o["real"]["ok"]), None)
        if ref is None:
            continue
        for o in outs:
            if o is ref:
                continue
            row = {"group": key, "layout": label(o), "dtype": o["case"]["dtype"], "ok": o["real"]["ok"]}
            if not o["real"]["ok"]:
                e = o["real"]["error"]
                row["error"] = f"{e['kind']}@{o['real']['stage']}: {e['message'][:90]}"
            else:
                diffs = {}
                for n in NAMES:
                    a = ref["real"]["outputs"].get(n, {}).get("value")
                    b = o["real"]["outputs"].get(n, {}).get("value")
                    if a is None and b is None:
                        continue
                    if a is None or b is None:
                        diffs[n] = "missing"
                        continue
                    d = max_diff(a, b)
                    if isinstance(d, float) and d > 0:
                        scale = max(abs(v) for v in a["values"] if not isinstance(v, str)) or 1.0
                        d = (d, d / scale)
                    diffs[n] = d
                    rd = o["real"]["outputs"][n].get("replicas_differ")
                    if rd:
                        diffs[n + "~replicas"] = rd
                row["diffs"] = diffs
            rows.append(row)
    return rows


def main(argv=None):
    rows = compare(argv or sys.argv[1:])
    for r in rows:
        if not r["ok"]:
            print(f"{r['group']:22s} {r['layout']} {r['dtype']}  ERROR {r['error']}")
            continue
        worst = {k: v for k, v in r["diffs"].items() if v != 0.0}
        bad = [k for k, v in worst.items() if not isinstance(v, tuple) or v[1] > TOL]
        txt = " ".join(f"{k}={v[0]:.2g}({v[1]:.1e})" if isinstance(v, tuple) else f"{k}={v}"
                       for k, v in worst.items())
        verdict = "identical" if not worst else ("MISMATCH " if bad else "rounding  ") + txt
        print(f"{r['group']:22s} {r['layout']} {r['dtype']}  {verdict}")


if __name__ == "__main__":
    main()
