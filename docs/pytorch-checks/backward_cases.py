#!/usr/bin/env python3
"""backward_cases.py: generate random VALID shardfuzz backward cases (shardfuzz.case/1 + `backward`), JSONL.

    PY=~/.cache/shardfuzz-scratch/t2130/bin/python     # any python with numpy
    $PY backward_cases.py --seed 1 --per-combo 6 --rules torch-2.13 --out cases.jsonl

For every boundary (tt-pre2416, tt-pr2388, tt-2416, tt-3192, tt-clean, tt-3654) x EP on/off it draws
`--per-combo` cases, and redraws a combo's set until it covers sp on/off, score_before_experts on/off, gate_bias
on/off, softmax/sigmoid, route_norm on/off, groups on/off (each both ways among its tp > 1 cases) and (EP on,
pre-#3167 boundaries, tp > 1) etp in {1, tp}.
The same --seed gives the same cases for every --rules value (only revision.rules differs), so outcomes of
different torch versions compare case by case.

Sizes: tp in {2, 3, 4} (a few tp = 1), B in {1, 2, 3}, L in 1..9, D in {4, 8, 16}, E in {4, 8},
K in 1..min(E, 4). Values: x ~ N(0,1), gate ~ N(0,1)/sqrt(D), gate_bias and expert_bias ~ 1e-3 N(0,1), rounded to
the case dtype (gate_bias, gate, x) or float32 (expert_bias). route_norm with K = 1 is not drawn (the gate
value s/s is constant: every gradient is zero up to rounding, a ratio says nothing). A draw is rejected when its float64 reference has a
near-tie: gap < 1e-4 between the K-th and (K+1)-th choice score (after group masking) of any token, or between the
Gk-th and (Gk+1)-th group score. For the tokensplit class (EP on, etp = 1, tp > 1, boundaries before tt-3192) T is
drawn divisible by tp, except for one case per version (`--uneven 1`) that exercises torchtitan's ValueError.

Layouts (docs/backward.md): layout.x = the router input layout: R for tt-pre2416 / tt-pr2388 / tt-2416, tt-3192
with EP off and tt-clean / tt-3654 with EP off; S(1) for tt-clean / tt-3654 with EP on; the MoE input layout
(S(1) if sp else R) for tt-3192 with EP on. gate / expert_bias / gate_bias R; counts_contract P(sum) with EP on,
else R.
"""

import argparse
import json
import math
import random
import sys

import numpy as np

BOUNDARIES = ("tt-pre2416", "tt-pr2388", "tt-2416", "tt-3192", "tt-clean", "tt-3654")
ETP_ERA = ("tt-pre2416", "tt-pr2388", "tt-2416")
ROUTERS = ("out_of_place_scatter", "local_map_both", "local_map_counts", "inplace_scatter")


def f32(a):
    return np.asarray(a, dtype=np.float32)


def bf16(a):
    """Round float32 to bfloat16 (round to nearest even), returned as float32."""
    b = f32(a).view(np.uint32).astype(np.uint64)
    b = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) << 16
    return (b.astype(np.uint32)).view(np.float32)


def rnd(a, dtype):
    return bf16(a) if dtype == "bf16" else f32(a)


def vals(a):
    return [float(str(np.float32(v))) for v in np.asarray(a, dtype=np.float32).reshape(-1)]


def layout_x(bnd, ep, sp):
    if ep and bnd in ("tt-clean", "tt-3654"):
        return "S(1)"
    if ep and bnd == "tt-3192":
        return "S(1)" if sp else "R"
    return "R"


def near_tie(x, W, b, eb, score_func, groups, K, tol=1e-4):
    """float64 reference routing; True when a K-th / group boundary gap is below tol."""
    x64, W64 = x.astype(np.float64), W.astype(np.float64)
    logits = x64.reshape(-1, x.shape[-1]) @ W64.T
    if b is not None:
        logits = logits + b.astype(np.float64)
    if score_func == "sigmoid":
        s = 1.0 / (1.0 + np.exp(-logits))
    else:
        m = logits - logits.max(-1, keepdims=True)
        e = np.exp(m)
        s = e / e.sum(-1, keepdims=True)
    c = s + (eb.astype(np.float64) if eb is not None else 0.0)
    E = c.shape[-1]
    if groups is not None:
        G, Gk = groups["num_groups"], groups["num_limited"]
        g = c.reshape(-1, G, E // G)
        top2 = -np.sort(-g, axis=-1)[..., :2]
        gs = top2.sum(-1)
        gss = -np.sort(-gs, axis=-1)
        if Gk < G and np.any(gss[:, Gk - 1] - gss[:, Gk] < tol):
            return True
        keep = np.argsort(-gs, axis=-1, kind="stable")[:, :Gk]
        mask = np.ones_like(gs, dtype=bool)
        np.put_along_axis(mask, keep, False, axis=-1)
        c = np.where(np.repeat(mask, E // G, axis=-1), -np.inf, c)
    cs = -np.sort(-c, axis=-1)
    if K < E:
        gap = cs[:, K - 1] - cs[:, K]
        if np.any(gap < tol):
            return True
    return False


def draw_config(rng, bnd, ep, tp_choices):
    tp = rng.choice(tp_choices)
    cfg = {
        "tp": tp,
        "sp": rng.random() < 0.5,
        "sbe": rng.random() < 0.5,
        "etp": 1,
        "gate_bias": rng.random() < 0.5,
        "score_func": rng.choice(["softmax", "sigmoid"]),
        "route_norm": rng.random() < 0.5,
        "groups_on": rng.random() < 0.45,
        "expert_bias": rng.random() < 0.6,
    }
    if ep and bnd in ETP_ERA and tp > 1 and rng.random() < 0.4:
        cfg["etp"] = tp
    return cfg


def covered(cfgs, bnd, ep):
    multi = [c for c in cfgs if c["tp"] > 1]
    need = ["sp", "sbe", "gate_bias", "route_norm", "groups_on"]
    for k in need:
        if len({c[k] for c in multi}) < 2:  # both values among the tp > 1 cases
            return False
    if len({c["score_func"] for c in cfgs}) < 2:
        return False
    if ep and bnd in ETP_ERA:
        if not any(c["etp"] > 1 for c in cfgs) or not any(c["etp"] == 1 and c["tp"] > 1 for c in cfgs):
            return False
    if len(multi) < len(cfgs) - 2:
        return False
    return True


def make_case(rng, nrng, bnd, ep, cfg, rules, uneven=False):
    tp = cfg["tp"]
    tokensplit = ep and bnd in ETP_ERA and cfg["etp"] == 1 and tp > 1
    for _ in range(10000):
        B = rng.choice([1, 1, 2, 2, 3])
        L = rng.randint(1, 9)
        if tokensplit and ((B * L) % tp != 0) != uneven:
            continue
        D = rng.choice([4, 4, 8, 8, 16])
        E = rng.choice([4, 8])
        K = rng.randint(1, min(E, 4))
        if cfg["route_norm"] and K == 1:
            continue  # ts = s / s: a constant gate value, every gradient is rounding noise
        groups = None
        if cfg["groups_on"]:
            opts = [(G, Gk) for G in (2, 4) if E % G == 0 and E // G >= 2 for Gk in range(1, G)
                    if K <= Gk * (E // G)]
            if not opts:
                continue
            G, Gk = rng.choice(opts)
            groups = {"num_groups": G, "num_limited": Gk}
        dtype = "bf16" if rng.random() < 0.15 else "f32"
        seed = rng.getrandbits(63)
        drng = np.random.default_rng(seed)
        x = rnd(drng.standard_normal((B, L, D)), dtype)
        W = rnd(drng.standard_normal((E, D)) / math.sqrt(D), dtype)
        b = rnd(1e-3 * drng.standard_normal(E), dtype) if cfg["gate_bias"] else None
        eb = f32(1e-3 * drng.standard_normal(E)) if cfg["expert_bias"] else None
        if near_tie(x, W, b, eb, cfg["score_func"], groups, K):
            continue
        mesh = {"shape": [tp], "names": ["tp"]}
        tensors = {"x": {"shape": [B, L, D], "dtype": dtype, "values": vals(x)},
                   "gate": {"shape": [E, D], "dtype": dtype, "values": vals(W)}}
        if eb is not None:
            tensors["expert_bias"] = {"shape": [E], "dtype": "f32", "values": vals(eb)}
        if b is not None:
            tensors["gate_bias"] = {"shape": [E], "dtype": dtype, "values": vals(b)}
        case = {
            "format": "shardfuzz.case/1",
            "mesh": mesh,
            "dims": {"batch": B, "seq": L, "model": D, "experts": E, "top_k": K},
            "router": {"score_func": cfg["score_func"], "route_norm": cfg["route_norm"],
                       "route_scale": rng.choice([1.0, 1.0, 2.5, 0.5, 16.0]), "groups": groups,
                       "expert_bias": eb is not None, "force_load_balance": False,
                       "gate_bias": b is not None},
            "layout": {"x": [layout_x(bnd, ep, cfg["sp"])], "gate": ["R"],
                       "expert_bias": ["R"] if eb is not None else None,
                       "counts_contract": ["P(sum)"] if ep else ["R"],
                       "gate_bias": ["R"] if b is not None else None},
            "revision": {"router": rng.choices(ROUTERS, weights=[45, 30, 10, 15])[0], "rules": rules,
                         "size1": rng.choice(["keep", "normalize"])},
            "dtype": dtype,
            "device": "cpu",
            "data": {"seed": seed, "style": "normal"},
            "tensors": tensors,
            "backward": {"boundary": bnd, "ep": ep, "etp": cfg["etp"], "score_before_experts": cfg["sbe"],
                         "sp": cfg["sp"], "loss_seed": rng.getrandbits(63)},
        }
        return case
    raise RuntimeError("no valid draw")


def generate(seed, per_combo, rules, uneven):
    rng = random.Random(seed)
    nrng = None
    out = []
    tp_choices = [2, 2, 3, 3, 4, 4, 1]
    uneven_left = uneven
    for bnd in BOUNDARIES:
        for ep in (False, True):
            for _ in range(1000):
                cfgs = [draw_config(rng, bnd, ep, tp_choices) for _ in range(per_combo)]
                if covered(cfgs, bnd, ep):
                    break
            for i, cfg in enumerate(cfgs):
                tokensplit = ep and bnd in ETP_ERA and cfg["etp"] == 1 and cfg["tp"] > 1
                un = False
                if tokensplit and uneven_left > 0:
                    un, uneven_left = True, uneven_left - 1
                out.append(make_case(rng, nrng, bnd, ep, cfg, rules, uneven=un))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--per-combo", type=int, default=6)
    ap.add_argument("--rules", default="torch-2.13", choices=["torch-2.12", "torch-2.13", "torch-2.14"])
    ap.add_argument("--uneven", type=int, default=1, help="how many tokensplit cases get a T not divisible by tp")
    ap.add_argument("--out")
    args = ap.parse_args()
    cases = generate(args.seed, args.per_combo, args.rules, args.uneven)
    out = open(args.out, "w") if args.out else sys.stdout
    for c in cases:
        out.write(json.dumps(c) + "\n")
    if args.out:
        out.close()
    sys.stderr.write(f"{len(cases)} cases\n")


if __name__ == "__main__":
    main()
