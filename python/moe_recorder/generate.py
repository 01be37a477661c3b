"""Random MoE-layer cases (shardfuzz.case/2, subject kind "moe") with inline tensors (stdlib only).

Most cases are small and valid: world 2-4, a few tokens, D = 8 and F = 8 (8 * tp where TP shards
the experts' F: the CPU grouped GEMM needs bf16 rows of a multiple of 16 bytes). A share are configurations torchtitan rejects or that trip
it at run time (ep not dividing, experts not divisible by ep, bad expert groups, a non-positive
load-balance coefficient, sequences the trainer refuses, D not a multiple of 8), so the recording
holds the errors too.

Ties: a token whose K-th and (K+1)-th routing choice (scores + expert_bias, after the group mask)
are closer than a margin gets its x row redrawn (up to 50 times); so do tokens whose Gk-th and
(Gk+1)-th group scores are that close. The router is replayed here in float64 (bf16 cases: gate
logits and scores rounded to bf16, as the CPU run computes them, since CPU autocast cannot run the
gate in float32). Tokens still too close are listed in data.near_tie_tokens."""

import json
import math
import random
import struct

from .assemble import bf16, f32, shortest


def tensor(shape, values, dtype):
    return {"shape": list(shape), "dtype": dtype, "values": [shortest(v) for v in values]}


def draw(rnd, n, scale, dtype):
    """Normal draws kept short in JSON: f32 cases round to 3 significant decimals (then to the
    nearest float32, whose shortest text is those decimals); bf16 cases to bf16 on a 1/128 grid."""
    if dtype == "bf16":
        return [bf16(round(rnd.gauss(0.0, scale) * 128) / 128) for _ in range(n)]
    return [f32(float(f"{rnd.gauss(0.0, scale):.3g}")) for _ in range(n)]


def draw_grid(rnd, n, scale, dtype="f32"):
    """Normal draws on a coarse grid, short in JSON: multiples of 0.05 (f32 cases; the nearest
    float32, written as its shortest decimal) or of 1/16 (bf16 cases; exact). Used for the expert
    and shared-expert weights, where ties do not matter."""
    if dtype == "bf16":
        return [round(rnd.gauss(0.0, scale) * 16) / 16 for _ in range(n)]
    return [f32(round(round(rnd.gauss(0.0, scale) / 0.05) * 0.05, 2)) for _ in range(n)]


def divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


# ---------------------------------------------------------------- router replay (for tie margins)

def _sigmoid(z):
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def route_margins(x_row, gate, E, D, K, score_func, bias, groups, dtype):
    """(expert margin, group margin) for one token: the gap between the K-th and (K+1)-th routing
    choice, and between the Gk-th and (Gk+1)-th group score (inf when not applicable)."""
    rnd = bf16 if dtype == "bf16" else (lambda v: v)
    logits = [rnd(sum(x_row[d] * gate[e * D + d] for d in range(D))) for e in range(E)]
    if score_func == "sigmoid":
        scores = [rnd(_sigmoid(z)) for z in logits]
    else:
        m = max(logits)
        ex = [math.exp(z - m) for z in logits]
        s = sum(ex)
        scores = [rnd(v / s) for v in ex]
    choice = [scores[e] + (bias[e] if bias is not None else 0.0) for e in range(E)]
    gmargin = float("inf")
    if groups is not None:
        G, Gk = groups["num_groups"], groups["num_limited"]
        per = E // G
        gscores = []
        for g in range(G):
            top = sorted(choice[g * per:(g + 1) * per], reverse=True)[:2]
            gscores.append(sum(top))
        order = sorted(range(G), key=lambda g: -gscores[g])
        if Gk < G:
            gmargin = gscores[order[Gk - 1]] - gscores[order[Gk]]
        keep = set(order[:Gk])
        choice = [choice[e] if (e // per) in keep else float("-inf") for e in range(E)]
    srt = sorted(choice, reverse=True)
    emargin = float("inf") if K >= E else srt[K - 1] - srt[K]
    if emargin != emargin:
        emargin = 0.0
    return emargin, gmargin


# ---------------------------------------------------------------- configurations

WORLDS = [(1, 4), (2, 36), (3, 5), (4, 34), (6, 5), (8, 16)]


def pick_weighted(rnd, items):
    total = sum(w for _, w in items)
    x = rnd.uniform(0, total)
    for v, w in items:
        x -= w
        if x <= 0:
            return v
    return items[-1][0]


def factor_world(rnd, world):
    """(dp, cp, tp), each 1..4 (dp up to 8 when needed), product = world."""
    opts = []
    for tp in (1, 2, 3, 4):
        for cp in (1, 2, 3, 4):
            if world % (tp * cp):
                continue
            dp = world // (tp * cp)
            if dp > 4 and world <= 8:
                continue
            if dp > 4:
                continue
            opts.append((dp, cp, tp))
    # prefer tp > 1 (it is where EP/SP interact)
    weights = [(o, 3 if o[2] > 1 else 1) for o in opts]
    return pick_weighted(rnd, weights)


BACKENDS = (("spmd_types", 45), ("partial_dtensor", 40), ("full_dtensor", 15))


def make_case(rnd, backends=None, rules="torch-2.14", revision="tt-0.3.0",
              reject_rate=0.12, worlds=None, seed=None):
    world = pick_weighted(rnd, worlds or WORLDS)
    dp, cp, tp = factor_world(rnd, world)
    backend = pick_weighted(rnd, [b for b in BACKENDS if backends is None or b[0] in backends])
    t_one = dp == 1 and rnd.random() < 0.08  # a single token (B = L = 1)
    dpr = rnd.choice(divisors(dp)) if dp > 1 and rnd.random() < 0.4 else 1
    dps = dp // dpr
    sparse = dps * cp * tp
    reject = rnd.random() < reject_rate
    kind_reject = rnd.choice(["ep", "experts", "groups", "coeff", "seq", "dim", "topk"]) if reject else None

    # expert parallel degree: a divisor of dp_shard*cp*tp (1 = off), EP more often on
    ep_opts = [d for d in divisors(sparse) if d <= 4]
    ep = rnd.choice(ep_opts[1:]) if len(ep_opts) > 1 and rnd.random() < 0.6 else 1
    if kind_reject == "ep":
        bad = [e for e in (2, 3, 4) if sparse % e]
        if bad:
            ep = rnd.choice(bad)
        else:
            kind_reject = None
    sp = rnd.random() < 0.55

    E = pick_weighted(rnd, [(e, w) for e, w in ((2, 6), (4, 4), (8, 1)) if e % ep == 0] or [(2 * ep, 1)])
    if kind_reject == "experts":
        bad = [e for e in (2, 3, 6) if ep > 1 and e % ep]
        E = rnd.choice(bad) if bad else E
        if not bad:
            kind_reject = None
    if E % ep and kind_reject != "experts":
        E = 2 * ep
    K = rnd.choice([k for k in (1, 2, 3) if k <= E])
    if kind_reject == "topk":
        K = E + 1
    # the CPU grouped GEMM wants every bf16 row a multiple of 16 bytes: D and the local F
    # (F / tp when the experts are TP-sharded, EP off) multiples of 8
    D = 8
    F = 8 if ep > 1 else 8 * tp
    if F > 8 and F * E > 32:  # keep recordings small: fewer experts when TP widens F
        E = max(2, 32 // F)
    if kind_reject == "dim":
        if ep == 1 and tp > 1 and rnd.random() < 0.5:
            F = 8
        else:
            D = rnd.choice([4, 6, 12])
    Fs = 8 if rnd.random() < 0.5 else None

    # tokens: batch B (multiple of dp), sequence L (multiple of cp, and of tp under SP, mostly)
    b_loc = rnd.choice([1, 1, 2])
    B = dp * b_loc
    max_L = max(1, (24 if cp > 1 else 16) // B)
    seq_unit = cp * (2 if cp > 1 else 1) * (tp if sp else 1)
    Ls = [l for l in range(1, max_L + 1) if l % seq_unit == 0]
    style_T = rnd.random()
    if kind_reject == "seq" or not Ls:
        cand = [l for l in range(1, max_L + 1) if l % cp == 0 and l % seq_unit != 0]
        L = rnd.choice(cand) if cand else max(cp, 1)
        if L % seq_unit == 0:
            kind_reject = None
    elif style_T < 0.2:
        L = Ls[0]
    else:
        L = rnd.choice(Ls)
    if not sp and rnd.random() < 0.3:
        # SP off: no trainer rule on tp; a sequence the TP ranks cannot split evenly (or T = 1)
        cand = [l for l in range(1, max_L + 1) if l % cp == 0 and (l // cp) % tp != 0]
        if cand:
            L = rnd.choice(cand)
    if t_one:
        B, L = 1, 1
    trainer_checks = True
    if t_one and L % seq_unit and rnd.random() < 0.6:
        trainer_checks = False  # the trainer refuses T = 1 under SP/CP: run the module anyway
    if kind_reject == "seq" and rnd.random() < 0.5:
        trainer_checks = False  # run the module anyway, past the trainer's check

    score_func = rnd.choice(["softmax", "sigmoid"])
    route_norm = rnd.random() < 0.3
    route_scale = rnd.choice([1.0, 1.0, 2.5])
    groups = None
    if rnd.random() < 0.2 or kind_reject == "groups":
        gopts = [g for g in divisors(E) if g > 1 and E // g >= 2]
        if kind_reject == "groups":
            how = rnd.choice(["nolimit", "indivisible", "small"])
            if how == "nolimit":
                groups = {"num_groups": gopts[0] if gopts else 2, "num_limited": None}
            elif how == "indivisible":
                bad = [g for g in (3, 5) if E % g]
                groups = {"num_groups": bad[0] if bad else 3, "num_limited": 1}
            else:
                groups = {"num_groups": E, "num_limited": 1}
        elif gopts:
            G = rnd.choice(gopts)
            Gk = rnd.choice([g for g in range(1, G + 1) if g * (E // G) >= K] or [G])
            groups = {"num_groups": G, "num_limited": Gk}
    force = rnd.random() < 0.08
    coeff = 0.001 if rnd.random() < 0.7 else None
    if kind_reject == "coeff":
        coeff = rnd.choice([0.0, -0.001])
    dtype = "bf16" if rnd.random() < 0.15 else "f32"
    backward = rnd.random() < 0.92
    style = "skewed" if rnd.random() < 0.25 else "normal"

    # tensors
    seed = seed if seed is not None else rnd.randrange(1 << 30)
    trnd = random.Random(seed)
    gate = draw(trnd, E * D, 1.0 / math.sqrt(D) * 1.5, dtype)
    bias = None
    if coeff is not None and coeff > 0 or kind_reject == "coeff":
        if style == "skewed":
            bias = [f32(trnd.choice([0.0, 0.0, 0.3, -0.3]) + trnd.gauss(0, 0.01)) for _ in range(E)]
        else:
            bias = [f32(trnd.gauss(0, 0.01)) if trnd.random() < 0.5 else 0.0 for _ in range(E)]
    x = []
    near = []
    thr = 0.02 if dtype == "bf16" else 1e-4
    route_bias = bias if (coeff is not None and coeff > 0) else None
    groups_ok = groups is not None and groups.get("num_limited") and E % groups["num_groups"] == 0 \
        and E // groups["num_groups"] >= 2
    for t in range(B * L):
        for attempt in range(50):
            row = draw(trnd, D, 1.0, dtype)
            if style == "skewed":
                # push tokens toward a favourite direction: fewer experts get tokens
                row = [bf16(round(v * 128) / 128) if dtype == "bf16" else f32(float(f"{v:.3g}")) for v in
                       [r + 1.5 * g for r, g in zip(row, gate[:D])]]
            if force or K > E:
                break
            em, gm = route_margins(row, gate, E, D, K, score_func, route_bias,
                                   groups if groups_ok else None, dtype)
            if em > thr and gm > thr:
                break
        else:
            near.append(t)
        x.extend(row)
    w_scale = 0.3
    tensors = {
        "x": tensor((B, L, D), x, dtype),
        "gate": tensor((E, D), gate, dtype),
        "w1": tensor((E, F, D), draw_grid(trnd, E * F * D, w_scale, dtype), dtype),
        "w2": tensor((E, D, F), draw_grid(trnd, E * D * F, w_scale, dtype), dtype),
        "w3": tensor((E, F, D), draw_grid(trnd, E * F * D, w_scale, dtype), dtype),
    }
    if bias is not None and coeff is not None:
        tensors["expert_bias"] = tensor((E,), bias, "f32")
    if Fs is not None:
        tensors["shared_w1"] = tensor((Fs, D), draw_grid(trnd, Fs * D, w_scale, dtype), dtype)
        tensors["shared_w2"] = tensor((D, Fs), draw_grid(trnd, D * Fs, w_scale, dtype), dtype)
        tensors["shared_w3"] = tensor((Fs, D), draw_grid(trnd, Fs * D, w_scale, dtype), dtype)
    if backward:
        tensors["grad_y"] = tensor((B, L, D), draw(trnd, B * L * D, 1.0, dtype), dtype)
    data = {"seed": seed, "style": style, "tensors": tensors}
    if near:
        data["near_tie_tokens"] = near
    subject = {
        "kind": "moe", "revision": revision, "backend": backend,
        "parallel": {"dp_replicate": dpr, "ep": ep, "sp": sp},
        "dims": {"batch": B, "seq": L, "model": D, "hidden": F, "experts": E, "top_k": K, "shared_hidden": Fs},
        "router": {"score_func": score_func, "route_norm": route_norm, "route_scale": route_scale,
                   "groups": groups, "force_load_balance": force},
        "load_balance_coeff": coeff,
        "backward": backward,
    }
    if not trainer_checks:
        subject["trainer_checks"] = False
    if backend == "spmd_types" and rnd.random() < 0.15:
        subject["typecheck"] = True
    if kind_reject:
        data["intent"] = "reject:" + kind_reject  # a hint for humans; the recording says what happened
    return {"format": "shardfuzz.case/2", "mesh": {"shape": [dp, cp, tp], "names": ["dp", "cp", "tp"]},
            "rules": rules, "dtype": dtype, "device": "cpu", "data": data, "subject": subject}


def generate(n, seed, backends=None, **kw):
    if backends is not None:
        kw["backends"] = tuple(backends)
    rnd = random.Random(seed)
    return [make_case(rnd, **kw) for _ in range(n)]


FOCUS = {
    # EP on with ep < tp (torchtitan 0.3.0 accepts it; later revisions require ep >= tp)
    "ep_lt_tp": lambda c: 1 < c["subject"]["parallel"]["ep"] < c["mesh"]["shape"][2],
    # EP off, SP on, tp > 1, one batch row per rank, backward (the DTensor backends' x_grad problem)
    "b1_sp_tp": lambda c: (c["subject"]["parallel"]["ep"] == 1 and c["subject"]["parallel"]["sp"]
                           and c["mesh"]["shape"][2] > 1 and c["subject"]["backward"]
                           and c["subject"]["dims"]["batch"] // c["mesh"]["shape"][0] == 1),
    "bf16": lambda c: c["dtype"] == "bf16",
    "t1": lambda c: c["subject"]["dims"]["batch"] * c["subject"]["dims"]["seq"] == 1,
}


def generate_paired(n, seed, full_dtensor_rate=0.35, focus=None, **kw):
    """n configurations, each recorded under spmd_types and partial_dtensor (and full_dtensor for a
    share of them) with the same tensors. Returns wrapper lines {"id", "config_id", "case"}; the
    id is "S<seed>-<n>-<backend>", the config id "S<seed>-<n>" (what the consistency check pairs).
    The spmd_types copy keeps the draw's typecheck flag; the DTensor copies never have one."""
    rnd = random.Random(seed)
    out = []
    i = 0
    draws = 0
    while i < n:
        base = make_case(rnd, backends=("spmd_types",), **kw)
        draws += 1
        if focus and not any(FOCUS[f](base) for f in focus):
            if draws > 200 * n:
                break
            continue
        backends = ["spmd_types", "partial_dtensor"]
        if rnd.random() < full_dtensor_rate:
            backends.append("full_dtensor")
        cid = f"S{seed}-{i}"
        for b in backends:
            c = json.loads(json.dumps(base))
            c["subject"]["backend"] = b
            if b != "spmd_types":
                c["subject"].pop("typecheck", None)
            out.append({"id": f"{cid}-{b}", "config_id": cid, "case": c})
        i += 1
    return out


def dump(cases, path):
    with open(path, "w") as f:
        for c in cases:
            f.write(json.dumps(c, separators=(",", ":")) + "\n")


# ---------------------------------------------------------------- same tensors, many layouts

CONSISTENCY_LAYOUTS = [
    # (dp, cp, tp, dp_replicate, ep, sp)
    (1, 1, 1, 1, 1, True),
    (1, 1, 2, 1, 1, True), (1, 1, 2, 1, 1, False), (1, 1, 2, 1, 2, True), (1, 1, 2, 1, 2, False),
    (2, 1, 1, 1, 2, True), (2, 1, 1, 2, 1, True), (1, 2, 1, 1, 2, False), (1, 2, 1, 1, 1, True),
    (2, 1, 2, 1, 2, True), (2, 1, 2, 1, 4, False), (2, 1, 2, 2, 2, True), (1, 1, 4, 1, 4, True),
    (1, 1, 4, 1, 2, False), (1, 2, 2, 1, 4, True), (2, 2, 1, 1, 2, True),
]


def consistency_cases(n_bases, seed, backends=("spmd_types", "partial_dtensor"), rules="torch-2.14",
                      revision="tt-0.3.0", layouts=None):
    """For each base draw (router options and tensors), the same case under many parallel layouts,
    the first being one rank. B = 2, L = 8 (divisible by every cp * 2 * tp used), E = 4, F = 16."""
    rnd = random.Random(seed)
    out = []
    for b in range(n_bases):
        base = make_case(random.Random(rnd.randrange(1 << 30)), backends=("spmd_types",), rules=rules,
                         revision=revision, reject_rate=0.0, worlds=[(1, 1)])
        # fixed dims that every layout below can split, router options from the draw
        subj = base["subject"]
        B, L, D, F, E = 2, 8, 8, 16, 4
        K = min(subj["dims"]["top_k"], 3)
        groups = subj["router"]["groups"]
        if groups is not None:
            groups = {"num_groups": 2, "num_limited": 1 if K <= 2 else 2}
        subj["router"]["groups"] = groups
        fresh = make_tensors(random.Random(rnd.randrange(1 << 30)), B, L, D, F, E, K,
                             subj["dims"]["shared_hidden"], subj["router"], subj["load_balance_coeff"],
                             base["dtype"], True, base["data"]["style"])
        for dp, cp, tp, dpr, ep, sp in (layouts or CONSISTENCY_LAYOUTS):
            for backend in backends:
                c = json.loads(json.dumps(base))
                c["mesh"]["shape"] = [dp, cp, tp]
                c["data"] = json.loads(json.dumps(fresh))
                c["data"]["intent"] = f"consistency:{seed}:{b}"
                s = c["subject"]
                s["backend"] = backend
                s["parallel"] = {"dp_replicate": dpr, "ep": ep, "sp": sp}
                s["dims"].update({"batch": B, "seq": L, "model": D, "hidden": F, "experts": E, "top_k": K})
                s["backward"] = True
                s.pop("trainer_checks", None)
                out.append(c)
    return out


def make_tensors(trnd, B, L, D, F, E, K, Fs, router, coeff, dtype, backward, style):
    """The data block of a case (see make_case), for given dims and router options."""
    gate = draw(trnd, E * D, 1.0 / math.sqrt(D) * 1.5, dtype)
    bias = None
    if coeff is not None:
        bias = [f32(trnd.gauss(0, 0.01)) if trnd.random() < 0.5 else 0.0 for _ in range(E)]
    groups = router.get("groups")
    thr = 0.02 if dtype == "bf16" else 1e-4
    x, near = [], []
    for t in range(B * L):
        for attempt in range(50):
            row = draw(trnd, D, 1.0, dtype)
            if router.get("force_load_balance"):
                break
            em, gm = route_margins(row, gate, E, D, K, router["score_func"], bias, groups, dtype)
            if em > thr and gm > thr:
                break
        else:
            near.append(t)
        x.extend(row)
    tensors = {
        "x": tensor((B, L, D), x, dtype),
        "gate": tensor((E, D), gate, dtype),
        "w1": tensor((E, F, D), draw_grid(trnd, E * F * D, 0.3, dtype), dtype),
        "w2": tensor((E, D, F), draw_grid(trnd, E * D * F, 0.3, dtype), dtype),
        "w3": tensor((E, F, D), draw_grid(trnd, E * F * D, 0.3, dtype), dtype),
    }
    if bias is not None:
        tensors["expert_bias"] = tensor((E,), bias, "f32")
    if Fs is not None:
        tensors["shared_w1"] = tensor((Fs, D), draw_grid(trnd, Fs * D, 0.3, dtype), dtype)
        tensors["shared_w2"] = tensor((D, Fs), draw_grid(trnd, D * Fs, 0.3, dtype), dtype)
        tensors["shared_w3"] = tensor((Fs, D), draw_grid(trnd, Fs * D, 0.3, dtype), dtype)
    if backward:
        tensors["grad_y"] = tensor((B, L, D), draw(trnd, B * L * D, 1.0, dtype), dtype)
    data = {"seed": None, "style": style, "tensors": tensors}
    if near:
        data["near_tie_tokens"] = near
    return data
