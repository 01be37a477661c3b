"""A backward case on real DTensor (docs/backward.md): the boundary revision's program from the MoE
input to the loss, the loss's backward, and every rank's gradients. Engine-neutral like forward.py.

The loss stands in for the experts: L = sum_r sum_{t,k} ts_r[t,k] * V_r[t, ids_r[t,k]], with V and
each rank's V_r drawn from `loss_seed` (splitmix64, multiples of 1/64) by loss class."""

import torch
import torch.nn.functional as F
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard
from torch.distributed.tensor.experimental import local_map

from . import common
from .commlog import CommLog
from .router import choose, scale, score

BOUNDARIES = ("tt-pre2416", "tt-pr2388", "tt-2416", "tt-3192", "tt-clean", "tt-3654")
LOCAL_ROUTE = ("tt-pre2416", "tt-pr2388", "tt-2416")  # the router body on local tensors
UNEVEN = "Uneven split of tokens of is not supported yet. Requires EP degree dividing batch size * seq len."
R, P = Replicate(), Partial()

# ---- the loss weights (exact, pure Python) -----------------------------------------------------
M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
STREAM = 0xD1B54A32D192ED03


def splitmix64(z):
    z = (z + GOLDEN) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def weight(seed, s, i):
    return ((splitmix64((seed + s * STREAM + i) & M64) % 129) - 64) / 64.0


def v_rows(seed, T, E):
    return [[weight(seed, 0, t * E + e) for e in range(E)] for t in range(T)]


def loss_class(bw, n):
    """tokensplit | local | replicated | partial (docs/backward.md, "The loss")."""
    b, ep, etp, sbe = bw["boundary"], bool(bw["ep"]), int(bw["etp"]), bool(bw["score_before_experts"])
    if ep and b in ("tt-3192", "tt-clean", "tt-3654"):
        return "local"
    if ep and etp == 1 and n > 1 and b in LOCAL_ROUTE:
        return "tokensplit"
    if sbe and b in ("tt-pre2416", "tt-pr2388"):
        return "replicated"
    return "partial"


def rank_weights(seed, T, E, n, cls, r):
    """V_r (T rows of E) for rank r; ValueError (torchtitan's) for an uneven token split."""
    V = v_rows(seed, T, E)
    if cls == "partial":
        shares = [[[weight(seed, 1 + q, t * E + e) for e in range(E)] for t in range(T)] for q in range(n - 1)]
        if r < n - 1:
            return shares[r]
        return [[V[t][e] - sum(shares[q][t][e] for q in range(n - 1)) for e in range(E)] for t in range(T)]
    if cls == "tokensplit":
        if T % n != 0:
            raise ValueError(UNEVEN)
        lo, hi = r * (T // n), (r + 1) * (T // n)
        return [row if lo <= t < hi else [0.0] * E for t, row in enumerate(V)]
    return V


# ---- the program ---------------------------------------------------------------------------------

def gate(x, W, b):
    """The gate Linear on float32 operands (torchtitan's float32 autocast since #3192)."""
    return F.linear(x.float(), W.float(), None if b is None else b.float())


def route(case, logits, eb, label, seen=None):
    """The router body: (gate values, ids), on DTensors or local tensors; `seen["ids"]` keeps the
    ids for the outcome."""
    scores = score(logits.float(), case["router"]["score_func"])
    ids, _ = choose(case, scores, eb, case["revision"]["sites"][0], label)
    if seen is not None:
        seen["ids"] = ids
    label("topk_scores")
    return scale(case, scores.gather(dim=-1, index=ids)), ids


def local_loss(ts, ids, tok, V):
    """sum_{t,k} ts[t,k] * V[tok[t], ids[t,k]]."""
    w = V[tok.reshape(-1)].reshape(*tok.shape, V.shape[-1])
    return (ts * w.gather(-1, ids)).sum()


def token_piece(tok, p, n, r):
    """Rank r's token indices under placement p of a 1-D mesh of n."""
    if isinstance(p, Shard):
        return common.local_piece(tok, [n], (p,), r)
    return tok


def local_program(case, x_in, W, b, eb, V, mesh, label, seen):
    """tt-pre2416, tt-pr2388, tt-2416, and tt-3192 with EP off: the router body on local tensors."""
    bnd = case["backward"]["boundary"]
    d = case["dims"]
    T, D = int(d["batch"]) * int(d["seq"]), int(d["model"])
    label("moe.input")
    x = x_in.redistribute(mesh, (R,), async_op=True)
    if bnd == "tt-3192":
        logits = gate(x.view(T, D), W, b)
    else:
        xl = x.to_local(grad_placements=(P,)) if bnd == "tt-2416" else x.to_local()
        xg = DTensor.from_local(xl.view(T, D), mesh, (R,), run_check=False)
        label("logits")
        logits = gate(xg, W, b)
    sl = logits.to_local() if bnd == "tt-pre2416" else logits.to_local(grad_placements=(P,))
    ts, ids = route(case, sl, eb, label, seen)
    if V is None:  # an uneven token split: torchtitan's reorderer raises here
        raise ValueError(UNEVEN)
    return local_loss(ts, ids, torch.arange(T, dtype=torch.int64), V)


def dtensor_program(case, x_in, W, b, eb, V, mesh, ranks, label, seen):
    """tt-3192 with EP on, tt-clean, tt-3654: the router body on DTensors."""
    bw = case["backward"]
    bnd, ep, n = bw["boundary"], bool(bw["ep"]), ranks.world
    d = case["dims"]
    B, L, D = int(d["batch"]), int(d["seq"]), int(d["model"])
    tok = torch.arange(B * L, dtype=torch.int64)
    eb_dt = None if eb is None else DTensor.from_local(eb, mesh, (R,), run_check=False)
    if bnd == "tt-3192":
        xv = x_in.view(B * L, D)
        if xv.placements != (Shard(0),):  # the gate's SequenceParallel input style
            label("gate.input")
            xv = xv.redistribute(placements=(Shard(0),), async_op=True)
        label("logits")
        ts, ids = route(case, gate(xv, W, b), eb_dt, label, seen)
        p = ts.placements[0]
        return local_loss(ts.to_local(), ids.to_local(), ranks.rank_map(lambda r: token_piece(tok, p, n, r)), V)
    label("router.input")
    x = x_in.redistribute(mesh, (Shard(1),) if ep else (R,), async_op=True)
    label("logits")
    ts, ids = route(case, gate(x, W, b), eb_dt, label, seen)
    in_dst = (Shard(1),) if ep else (R,)
    label("experts.input")
    if ts.placements != in_dst:
        ts = ts.redistribute(placements=in_dst)
    if ids.placements != in_dst:
        ids = ids.redistribute(placements=in_dst)
    tok_l = ranks.rank_map(lambda r: token_piece(tok.reshape(B, L), in_dst[0], n, r))
    in_grad = ((Shard(1),), (Shard(1),)) if ep else ((P,), (P,)) if bnd == "tt-clean" else None
    experts = local_map(lambda ts_l, ids_l: local_loss(ts_l, ids_l, tok_l, V), out_placements=[P],
                        in_placements=(in_dst, in_dst), in_grad_placements=in_grad, device_mesh=mesh)
    return experts(ts, ids).to_local()


def sharded(case, ranks, mesh):
    """The boundary program and its backward. Status: ok, error, loss_class, grads {name:
    {placements, shapes, locals}}, comms (the backward's)."""
    bw, d = case["backward"], case["dims"]
    n = ranks.world
    T, E = int(d["batch"]) * int(d["seq"]), int(d["experts"])
    cls = loss_class(bw, n)
    status = {"ok": False, "error": None, "loss_class": cls, "grads": {}, "outputs": {}, "comms": []}
    x_full, W_full, b_full, eb_full = common.inputs(case)
    log = CommLog(mesh)
    forward_log = CommLog(mesh)
    try:
        try:
            V = ranks.rank_map(lambda r: torch.tensor(rank_weights(int(bw["loss_seed"]), T, E, n, cls, r),
                                                      dtype=torch.float32).reshape(T, E))
        except ValueError:
            V = None

        def leaf(full, pl):
            return ranks.dtensor(full, mesh, (pl,)).requires_grad_(True)

        x_in = leaf(x_full, Shard(1) if bw["sp"] else R)
        W = leaf(W_full, R)
        b = leaf(b_full, R) if b_full is not None else None
        eb = ranks.rank_map(lambda r: eb_full.clone()) if eb_full is not None else None
        label = lambda name: setattr(forward_log, "label", name)  # noqa: E731
        seen = {}
        with forward_log:
            if bw["boundary"] in LOCAL_ROUTE or (bw["boundary"] == "tt-3192" and not bw["ep"]):
                loss = local_program(case, x_in, W, b, eb, V, mesh, label, seen)
            else:
                loss = dtensor_program(case, x_in, W, b, eb, V, mesh, ranks, label, seen)
        status["ids"] = ranks.describe(seen["ids"])
        log.label = "grad"
        with log:
            loss.backward()
        grads = {"gate.weight": W.grad}
        if b is not None:
            grads["gate.bias"] = b.grad
        grads["x"] = x_in.grad
        status["grads"] = {k: (None if g is None else ranks.describe(g)) for k, g in grads.items()}
        status["ok"] = True
    except Exception as e:  # noqa: BLE001
        status["error"] = common.error_of(e)
        if ranks.is_timeout(e):
            status["timed_out"] = True
    status["comms"] = log.records
    status["forward_comms"] = forward_log.records
    return status


def reference(case):
    """torch autograd on the plain unsharded router (float32): {name: TensorData}."""
    bw, d = case["backward"], case["dims"]
    x_full, W_full, b_full, eb_full = common.inputs(case)
    T, E = int(d["batch"]) * int(d["seq"]), int(d["experts"])
    try:
        x = x_full.clone().requires_grad_(True)
        W = W_full.clone().requires_grad_(True)
        b = None if b_full is None else b_full.clone().requires_grad_(True)
        ts, ids = route(case, gate(x, W, b), eb_full, lambda name: None)
        V = torch.tensor(v_rows(int(bw["loss_seed"]), T, E), dtype=torch.float32)
        local_loss(ts, ids, torch.arange(T, dtype=torch.int64).reshape(ts.shape[:-1]), V).backward()
    except Exception as e:  # noqa: BLE001
        return {"error": common.error_of(e)}
    out = {"gate.weight": W.grad}
    if b is not None:
        out["gate.bias"] = b.grad
    out["x"] = x.grad
    return {k: common.data_of(v) for k, v in out.items()}
