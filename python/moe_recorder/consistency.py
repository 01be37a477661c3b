"""Self-consistency of recorded MoE outcomes (stdlib only).

    python -m moe_recorder.consistency [--json REPORT.json] [--strict] OUTCOMES.jsonl...

Three checks, over every line:

1. reference: a sharded outcome that ran (outcome.ok) against the unsharded plain-torch reference
   recorded beside it (y, x_grad, every parameter gradient, tokens_per_expert, expert_bias after
   the hook);
2. backends: lines of one configuration (same config_id, or the same case apart from the backend)
   under different backends: the same verdict (ok, or the same error kind) and, where both ran, the
   same values;
3. replicas: an output whose replicas (R/I axes) disagreed while being assembled.

Tolerance (bf16-aware): |a - b| <= RTOL * max|reference| + ATOL per output, RTOL = 0.02 (the routed
experts run their three GEMMs in bf16 even in f32 cases, 2^-8 per rounding, and the sharded sums of
partial gradients round differently from one sum), ATOL = 1e-6. Token counts must be equal.
K = 1 with route_norm makes the gate's gradient zero in exact arithmetic (the normalised score is
1): there both sides only need to be rounding-sized (`degenerate`). A line whose case lists near-tie tokens may route those tokens differently; its differences are
reported as "near-tie", not as mismatches. force_load_balance with the router's tokens split over
ranks is not comparable with the reference (the round-robin ids are per rank's local tokens).

Exit status 1 when --strict and a mismatch that is not explained (near-tie, not comparable) exists."""

import argparse
import json
import sys

from .assemble import max_diff, _num

RTOL = 0.02
ATOL = 1e-6
NAMES = ("y", "x_grad", "grad.gate", "grad.w1", "grad.w2", "grad.w3", "grad.shared_w1", "grad.shared_w2",
         "grad.shared_w3", "tokens_per_expert", "expert_bias")


def load(paths):
    for p in paths:
        with open(p) as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)


def label(o):
    c = o["case"]
    s = c["subject"]
    p = s["parallel"]
    dp, cp, tp = c["mesh"]["shape"]
    return (f"{o.get('id', '?')} {s['backend']} dp{dp}(r{p.get('dp_replicate', 1)}) cp{cp} tp{tp} "
            f"ep{p.get('ep', 1)} sp={'on' if p.get('sp', True) else 'off'} {c['dtype']}")


def config_key(o):
    if o.get("config_id"):
        return o["config_id"]
    c = json.loads(json.dumps(o["case"]))
    c["subject"]["backend"] = None
    c["subject"].pop("typecheck", None)
    return json.dumps(c, sort_keys=True)


def scale_of(t):
    vals = [abs(_num(v)) for v in t["values"] if not isinstance(v, bool)]
    vals = [v for v in vals if v == v and v != float("inf")]
    return max(vals) if vals else 0.0


def compare_values(a, b, name):
    """(verdict, detail): "same" | "close" | "differ", with the largest difference."""
    if a is None or b is None:
        return ("differ", "missing")
    d = max_diff(a, b)
    if isinstance(d, str):
        return ("differ", d)
    if d == 0.0:
        return ("same", 0.0)
    if name == "tokens_per_expert":
        return ("differ", d)
    sc = scale_of(a)
    if d <= RTOL * sc + ATOL:
        return ("close", d / sc if sc else d)
    return ("differ", {"max_abs": d, "rel": d / sc if sc else None})


def degenerate(o, name, a, b):
    """K = 1 with route_norm: the normalised top-1 score is s / (s + 1e-20) = 1, so the router gets no
    gradient in exact arithmetic and grad.gate is rounding noise on every side. Both sides must be
    noise-sized: below 1% of max|x| * max|grad_y|."""
    s = o["case"]["subject"]
    if name != "grad.gate" or s["dims"]["top_k"] != 1 or not s["router"].get("route_norm"):
        return False
    ts = o["case"]["data"]["tensors"]
    if a is None or b is None or "grad_y" not in ts:
        return False
    floor = 0.01 * scale_of(ts["x"]) * scale_of(ts["grad_y"])
    return scale_of(a) <= floor and scale_of(b) <= floor


def router_split(o):
    """Whether the router of this case sees a part of the tokens (force_load_balance then differs)."""
    c = o["case"]
    dp, cp, tp = c["mesh"]["shape"]
    p = c["subject"]["parallel"]
    return dp * cp > 1 or (tp > 1 and (p.get("sp", True) or p.get("ep", 1) > 1))


def check(paths):
    rows = {"reference": [], "backends": [], "replicas": []}
    stats = {"lines": 0, "ran": 0, "ref_ok": 0, "ref_compared": 0, "ref_close": 0, "ref_identical": 0,
             "ref_mismatch": 0, "ref_near_tie": 0, "ref_not_comparable": 0, "ran_but_ref_failed": 0,
             "pairs": 0, "pairs_same_verdict": 0, "pairs_values_close": 0, "pairs_values_mismatch": 0,
             "max_rel_ref": 0.0}
    by_cfg = {}
    for o in load(paths):
        stats["lines"] += 1
        out, ref = o["outcome"], o.get("reference") or {}
        by_cfg.setdefault(config_key(o), []).append(o)
        if out["ok"]:
            stats["ran"] += 1
        if ref.get("ok"):
            stats["ref_ok"] += 1
        for n, ent in (out.get("outputs") or {}).items():
            if ent.get("replicas_differ") or ent.get("assemble_error"):
                rows["replicas"].append({"line": label(o), "output": n, "replicas_differ": ent.get("replicas_differ"),
                                         "assemble_error": ent.get("assemble_error")})
        if not out["ok"]:
            continue
        if not ref.get("ok"):
            stats["ran_but_ref_failed"] += 1
            rows["reference"].append({"line": label(o), "verdict": "ran-but-reference-failed",
                                      "reference_error": ref.get("error")})
            continue
        subj = o["case"]["subject"]
        if subj["router"].get("force_load_balance") and router_split(o):
            stats["ref_not_comparable"] += 1
            continue
        stats["ref_compared"] += 1
        near = bool(o["case"]["data"].get("near_tie_tokens"))
        diffs = {}
        worst = "same"
        for n in NAMES:
            r = ref["outputs"].get(n)
            v = (out["outputs"].get(n) or {}).get("value")
            if r is None and v is None:
                continue
            if r is None:
                continue  # the reference only records what the case asks for
            verdict, detail = compare_values(r, v, n)
            if verdict == "differ" and degenerate(o, n, r, v):
                verdict, detail = "close", 0.0
                stats["degenerate_gate_grad"] = stats.get("degenerate_gate_grad", 0) + 1
            if verdict == "close" and scale_of(r) >= 1e-3:
                stats["max_rel_ref"] = max(stats["max_rel_ref"], detail)
            if verdict != "same":
                diffs[n] = [verdict, detail]
            if verdict == "differ":
                worst = "differ"
            elif verdict == "close" and worst == "same":
                worst = "close"
        if worst == "same":
            stats["ref_identical"] += 1
        elif worst == "close":
            stats["ref_close"] += 1
        else:
            key = "ref_near_tie" if near else "ref_mismatch"
            stats[key] += 1
            rows["reference"].append({"line": label(o), "verdict": "near-tie" if near else "MISMATCH",
                                      "diffs": {k: v for k, v in diffs.items() if v[0] == "differ"}})
    for key, outs in by_cfg.items():
        if len(outs) < 2:
            continue
        base = outs[0]
        for o in outs[1:]:
            stats["pairs"] += 1
            a, b = base["outcome"], o["outcome"]
            va = "ok" if a["ok"] else f"{a['error']['kind']}@{a['stage']}"
            vb = "ok" if b["ok"] else f"{b['error']['kind']}@{b['stage']}"
            if va != vb:
                rows["backends"].append({"pair": [label(base), label(o)], "verdict": "VERDICT-DIFFERS",
                                         "a": va, "b": vb,
                                         "a_error": a["error"]["message"][:200] if a["error"] else None,
                                         "b_error": b["error"]["message"][:200] if b["error"] else None})
                continue
            stats["pairs_same_verdict"] += 1
            if not a["ok"]:
                continue
            near = bool(base["case"]["data"].get("near_tie_tokens"))
            bad = {}
            for n in NAMES:
                x = (a["outputs"].get(n) or {}).get("value")
                y = (b["outputs"].get(n) or {}).get("value")
                if x is None and y is None:
                    continue
                verdict, detail = compare_values(x, y, n)
                if verdict == "differ" and not degenerate(base, n, x, y):
                    bad[n] = detail
            if bad:
                stats["pairs_values_mismatch"] += 1
                rows["backends"].append({"pair": [label(base), label(o)],
                                         "verdict": "near-tie" if near else "VALUES-DIFFER", "diffs": bad})
            else:
                stats["pairs_values_close"] += 1
    return stats, rows


def main(argv=None):
    ap = argparse.ArgumentParser(prog="moe_recorder.consistency")
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--json", default=None, help="write the full report here")
    ap.add_argument("--strict", action="store_true")
    a = ap.parse_args(argv)
    stats, rows = check(a.paths)
    print(json.dumps(stats, indent=1))
    for kind in ("reference", "backends", "replicas"):
        print(f"== {kind}: {len(rows[kind])}")
        for r in rows[kind]:
            print("  " + json.dumps(r)[:400])
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"stats": stats, "rows": rows}, f, indent=1)
    unexplained = stats["ref_mismatch"] + sum(1 for r in rows["backends"] if r["verdict"] == "VALUES-DIFFER")
    return 1 if a.strict and unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
