#!/usr/bin/env python3
"""shardfuzz reproducer: torchtitan's MoE router at boundary revision `tt-3654` (tt-3654 ep=false etp=1 score_before_experts=false sp=false), its loss and backward, on DTensor.

Mesh [2] ["tp"]; B=1 L=1 D=1 E=2 K=1, f32; x [R], gate [R].
shardfuzz's model of DTensor (torch-2.13 rules, size1=normalize) says:
    replica:gate.weight:tt-3654:torch-2.13:R@experts.local_map
    replica:x:tt-3654:torch-2.13:R@experts.local_map>router.input
    grad:gate.weight:tt-3654:torch-2.13:missing_reduction@experts.local_map
    grad:x:tt-3654:torch-2.13:missing_reduction@experts.local_map>router.input

    torchrun --nproc-per-node 2 THIS.py   # CPU, one gloo process per rank
    python THIS.py                          # one process: fake process group + LocalTensorMode
"""
import contextlib
import datetime
import math
import os
import pickle
import re
import tempfile

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed._local_tensor import LocalTensorMode
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor
from torch.distributed.tensor.experimental import local_map
from torch.distributed.tensor.placement_types import _StridedShard  # noqa: F401

try:
    from torch.distributed.tensor.debug import CommDebugMode
except ImportError:  # torch 2.11's debug package imports numpy for its visualizer
    from torch.distributed.tensor.debug._comm_mode import CommDebugMode

TITLE = "local_map_counts / torch-2.13 / size1=normalize"
MODEL = ["grad:gate.weight", "grad:x", "replica:gate.weight", "replica:x"]  # the verdict classes shardfuzz's model gives
RULES = "torch-2.13"
MESH_SHAPE, MESH_NAMES, WORLD = (2,), ("tp",), 2
B, L, D, E, K = 1, 1, 1, 2, 1
SCORE_FUNC, GROUPS, ROUND_ROBIN = "sigmoid", None, False

INPUTS = {
    "x": torch.tensor([
        1.0,
    ], dtype=torch.float32).reshape(1, 1, 1),
    "gate_weight": torch.tensor([
        -56.0, -3.0,
    ], dtype=torch.float32).reshape(2, 1),
}
PLACEMENTS = {"x": [Replicate()], "gate_weight": [Replicate()]}
CONTRACT = ["R"]  # the counts' placements the experts require (layout.counts_contract, size1=normalize)


def scatter_in_local_map(t, index, value, like):
    """`t.scatter_(-1, index, value)` inside local_map, placements taken from the live DTensors."""
    if not isinstance(t, DTensor):  # the reference: plain tensors
        return t.scatter_(-1, index, value)
    index_placements = index.placements if isinstance(index, DTensor) else None  # None: a plain tensor
    fn = local_map(lambda t, i: t.scatter_(-1, i, value), out_placements=(like.placements,),
                   in_placements=(like.placements, index_placements), device_mesh=like.device_mesh)
    return fn(t, index)


def router(x, gate_weight):
    """torchtitan's TokenChoiceTopKRouter.forward and the routing part of MoE.forward, revision local_map_counts."""
    scores = F.linear(x.float(), gate_weight.float())  # the gate, in float32
    scores = torch.sigmoid(scores)
    scores_for_choice = scores
    topk_ids = torch.topk(scores_for_choice, k=K, dim=-1, sorted=False).indices
    topk_scores = scores.gather(dim=-1, index=topk_ids)
    topk_scores = topk_scores * 1.0  # route_scale
    with site("routing_map"):
        routing_map = torch.zeros_like(scores, dtype=torch.bool)
        routing_map = scatter_in_local_map(routing_map, topk_ids, True, like=scores)  # under local_map (torchtitan#3753)
    counts = routing_map.sum(dim=(0, 1))  # tokens per expert
    return {"topk_scores": topk_scores, "topk_ids": topk_ids, "scores": scores, "routing_map": routing_map, "counts": counts}


BACKWARD = {"boundary": "tt-3654", "ep": False, "etp": 1, "score_before_experts": False, "sp": False}
LOSS_CLASS = "partial"  # how the experts consume the gate values (docs/backward.md, "The loss")
# The loss: sum over ranks r, tokens t, choices k of ts_r[t, k] * V_r[t, ids_r[t, k]], sum_r V_r = V
V = torch.tensor([
        0.078125, -0.015625,
    ], dtype=torch.float32).reshape(1, 2)
V_RANK = [
    torch.tensor([
        0.921875, 0.21875,
    ], dtype=torch.float32).reshape(1, 2),
    torch.tensor([
        -0.84375, -0.234375,
    ], dtype=torch.float32).reshape(1, 2),
]


def route(logits, expert_bias=None):
    """The router body on the gate's logits (plain tensors or DTensors): gate values, expert ids."""
    scores = torch.sigmoid(logits)
    scores_for_choice = scores
    topk_ids = torch.topk(scores_for_choice, k=K, dim=-1, sorted=False).indices
    topk_scores = scores.gather(dim=-1, index=topk_ids)
    return topk_scores * 1.0, topk_ids  # route_scale


def program(x_in, gate_weight, gate_bias, expert_bias, mesh, V_r):
    """Boundary revision tt-3654: the MoE input (a DTensor leaf) through the gate and router to this rank's loss; returns (loss, ids)."""
    x = x_in.redistribute(mesh, [Replicate()], async_op=True)  # router.input
    logits = F.linear(x.float(), gate_weight.float())  # the gate, in float32
    topk_scores, topk_ids = route(logits, None)
    in_dst = [Replicate()]  # the experts' input layout: local_map moves its inputs there
    if topk_scores.placements != tuple(in_dst):
        topk_scores = topk_scores.redistribute(placements=in_dst)
    if topk_ids.placements != tuple(in_dst):
        topk_ids = topk_ids.redistribute(placements=in_dst)
    tokens = tokens_under(in_dst, (B, L), mesh)
    # no in_grad_placements: the inputs' to_local() labels their gradients R (torchtitan#4054)
    experts = local_map(lambda ts, ids: local_loss(ts, ids, tokens, V_r), out_placements=[Partial()],
                        in_placements=(in_dst, in_dst), device_mesh=mesh,
                        in_grad_placements=None)  # experts.local_map
    return experts(topk_scores, topk_ids).to_local(), topk_ids


# ---- running it: the same code above on plain tensors (the reference) and on DTensors ------------
# Below is generic: it runs `router` (and `program`, for a backward case) both ways, collects what
# every rank saw, and says what diverged, in the words of shardfuzz's report.

U32 = 2.0 ** -24  # float32 unit roundoff


@contextlib.contextmanager
def site(name):
    """Counts the collectives DTensor issues inside a scatter site (group_mask, routing_map)."""
    before = COMMS.get_total_counts() if COMMS is not None else 0
    yield
    if COMMS is not None:
        SITE_COMMS[name] = SITE_COMMS.get(name, 0) + COMMS.get_total_counts() - before


COMMS, SITE_COMMS = None, {}


def rank_size(s, r):
    """Rank r's value of a size (LocalTensorMode holds sizes that differ per rank as LocalIntNodes)."""
    local = getattr(getattr(s, "node", None), "_local_ints", None)
    return int(local[r]) if local is not None else int(s)


def rank_view(t, r):
    """(placements, global shape, local tensor) of DTensor `t` as rank r sees it."""
    loc = t.to_local() if isinstance(t, DTensor) else t
    loc = loc.wait() if hasattr(loc, "wait") else loc
    loc = loc._local_tensors[r] if hasattr(loc, "_local_tensors") else loc
    pls = [str(p) for p in t.placements] if isinstance(t, DTensor) else ["plain tensor"]
    return pls, [rank_size(s, r) for s in t.shape], loc.detach().clone()


def rebuild(locals_, pls):
    """The global value from every rank's local tensor: cat over Shard, sum over Partial(sum),
    rank 0's over Replicate (mesh dims undone innermost first); a plain tensor is whole on every rank."""
    if pls == ["plain tensor"]:
        return locals_[0]
    coords = [[(r // math.prod(MESH_SHAPE[d + 1:])) % MESH_SHAPE[d] for d in range(len(MESH_SHAPE))]
              for r in range(WORLD)]
    cur = {tuple(c): t for c, t in zip(coords, locals_)}
    for md in reversed(range(len(MESH_SHAPE))):
        groups = {}
        for c, t in sorted(cur.items()):
            groups.setdefault(c[:md], []).append(t)
        p = pls[md]
        if p.startswith("S("):
            cur = {k: torch.cat(v, dim=int(p[2:-1])) for k, v in groups.items()}
        elif p == "P(sum)":
            cur = {k: torch.stack(v).sum(0).to(v[0].dtype) for k, v in groups.items()}
        elif p == "R":
            cur = {k: v[0] for k, v in groups.items()}
        else:
            raise NotImplementedError(f"gathering {p}")
    return cur[()]


def margins(x, w, b, eb):
    """Per token, in float64: is the top-k choice (and the kept groups) decided, i.e. is the gap at
    the K-th choice wider than what float32 rounding on both sides can close? Also whether the
    kept groups alone are decided (the group mask is compared there), and the score bound."""
    x64, w64 = x.double().reshape(-1, D), w.double()
    logits = x64 @ w64.T + (b.double() if b is not None else 0.0)
    absdot = (x64.abs() @ w64.abs().T + (b.double().abs() if b is not None else 0.0)).amax(-1)
    scores = torch.sigmoid(logits) if SCORE_FUNC == "sigmoid" else torch.softmax(logits, -1)
    choice = scores + (eb.double() if eb is not None else 0.0)
    scale = choice.abs().amax(-1)
    g = D * U32 / (1 - D * U32)
    bound = 2 * g * absdot + 8 * U32
    cbound = bound + 2 * U32 * scale
    groups_decided = torch.ones(choice.shape[0], dtype=torch.bool)
    if GROUPS is not None:
        gs = choice.reshape(-1, GROUPS[0], E // GROUPS[0]).topk(2, -1).values.sum(-1)
        groups_decided = gap(gs, GROUPS[1]) > 2 * (2 * cbound + 4 * U32 * scale)
        kept = torch.zeros_like(gs, dtype=torch.bool).scatter_(-1, gs.topk(GROUPS[1], -1).indices, True)
        choice = choice.reshape(-1, GROUPS[0], E // GROUPS[0]).masked_fill(~kept.unsqueeze(-1), -math.inf)
        choice = choice.reshape(-1, E)
    decided = groups_decided & (gap(choice, K) > 2 * cbound)
    if ROUND_ROBIN:  # force_load_balance: the ids do not depend on the scores, nothing is a tie
        decided[:] = True
    return decided, groups_decided, bound


def gap(v, k):
    if k >= v.shape[-1]:
        return torch.full(v.shape[:-1], math.inf, dtype=torch.float64)
    top = v.topk(k + 1, -1).values
    return torch.nan_to_num(top[..., k - 1] - top[..., k], nan=0.0)


def self_consistent(full, sm, found):
    """On every token, decided or not, the routing map marks exactly the token's ids, and the
    counts are the map summed over tokens."""
    ids = full["topk_ids"].reshape(-1, K).tolist()
    for t, row in enumerate(sm.tolist()):
        if row != [e in ids[t] for e in range(E)]:
            found.append(("value", "routing_map", f"routing_map of token {t} does not mark the token's own ids {ids[t]}"))
            break
    if not torch.equal(sm.long().sum(0), full["counts"].long().reshape(-1)):
        found.append(("value", "counts", "the counts differ from the routing map summed over tokens"))


def judge_values(ref, full, found):
    """The value oracle: scores within the bound, the same experts where the choice is decided,
    the routing map there, counts net of undecided tokens."""
    decided, groups_decided, bound = margins(INPUTS["x"], INPUTS["gate_weight"], INPUTS.get("gate_bias"), INPUTS.get("expert_bias"))
    rs, ss = ref["scores"].reshape(-1, E).double(), full["scores"].reshape(-1, E).double()
    bad = ((rs - ss).abs() > 2 * bound.unsqueeze(-1)) & ~(rs.isnan() & ss.isnan())
    if bad.any():
        t = int(bad.any(-1).nonzero()[0])
        found.append(("value", "scores", f"scores of token {t} differ beyond the bound {2 * float(bound[t]):.3e}"))
    ri, si = ref["topk_ids"].reshape(-1, K).sort(-1).values, full["topk_ids"].reshape(-1, K).sort(-1).values
    differ = (ri != si).any(-1) & decided
    if differ.any():
        t = int(differ.nonzero()[0])
        found.append(("value", "topk_ids", f"token {t} chose experts {si[t].tolist()}, the reference {ri[t].tolist()}"))
    rm, sm = ref["routing_map"].reshape(-1, E), full["routing_map"].reshape(-1, E)
    if ((rm != sm).any(-1) & decided).any():
        found.append(("value", "routing_map", "the routing map differs on tokens whose choice was decided"))
    self_consistent(full, sm, found)
    net = lambda m, c: c - m[~decided].sum(0).to(c.dtype)  # noqa: E731
    if not torch.equal(net(rm, ref["counts"]), net(sm, full["counts"])):
        found.append(("value", "counts", "counts differ from the reference's on tokens whose choice was decided"))
    if "group_mask" in ref and "group_mask" in full:
        rg, sg = ref["group_mask"].reshape(-1, GROUPS[0]), full["group_mask"].reshape(-1, GROUPS[0])
        if ((rg != sg).any(-1) & groups_decided).any():
            found.append(("value", "group_mask", "a token kept other groups than the reference"))


def offsets(ids, counts, found):
    """torchtitan's token reorder trusts each rank's local counts to describe its local ids: the
    counts must add up to the rank's routed slots and be their histogram. Checked where the
    counts pass their contract and sit next to ids they can describe (Partial counts next to
    token-sharded ids, or both Replicate)."""
    token_shard = re.compile(r"^_?S\((0|1)[,)]")
    paired = all((c.startswith("P(") and token_shard.match(i)) or c == i == "R"
                 for c, i in zip(counts["placements"], ids["placements"]))
    if not paired:
        return
    for r, (il, cl) in enumerate(zip(ids["locals"], counts["locals"])):
        il, cl = il.reshape(-1).long(), cl.reshape(-1).long()
        end, slots = int(cl.sum()), il.numel()
        if end != slots:
            found.append(("value", "offsets", f"rank {r}: offsets from its counts end at {end}, but it holds {slots} routed slots"))
        elif ((il < 0) | (il >= E)).any() or not torch.equal(torch.bincount(il, minlength=E)[:E], cl[:E]):
            found.append(("value", "offsets", f"rank {r}: its counts are not the histogram of its ids"))


def judge_forward(ref, ref_err, seen):
    """shardfuzz's forward verdicts from the reference and what every rank saw."""
    found = []
    err = seen["error"]
    if (ref_err is None) != (err is None):
        who, e = ("sharded run", err) if err is not None else ("reference", ref_err)
        found.append(("error", "-", f"only the {who} raised: {e}"))
    if err is None and ref_err is None:
        full = {}
        for name, o in seen["outputs"].items():
            truth = list(ref[name].shape)
            if any(s != truth for s in o["shapes"]):
                how = "rank_dependent" if any(s != o["shapes"][0] for s in o["shapes"]) else "wrong_global"
                found.append(("shape", name, f"ranks infer {o['shapes']}, the reference is {truth} ({how})"))
            try:
                full[name] = rebuild(o["locals"], o["placements"])
            except NotImplementedError as e:
                print(f"  (values of {name} not compared: {e})")
        shapes_differ = [n for n, t in full.items() if list(t.shape) != list(ref[n].shape)]
        for n in shapes_differ:
            found.append(("value", n, f"gathered shape {list(full[n].shape)} differs from the reference's"))
        if len(full) == len(seen["outputs"]) and not shapes_differ:
            judge_values(ref, full, found)
        counts = seen["outputs"]["counts"]["placements"]
        if counts != [str(p) for p in CONTRACT]:
            found.append(("placement", "counts", f"counts are {counts}, the contract says {[str(p) for p in CONTRACT]}"))
        else:
            offsets(seen["outputs"]["topk_ids"], seen["outputs"]["counts"], found)
    if RULES != "torch-2.12":
        for name, n in seen["site_comms"].items():
            if n:
                found.append(("comm", name, f"{n} collective(s) at the {name} scatter, where {RULES} promises a local scatter"))
    return found


def sharded(ranks):
    """Distributes the inputs, runs the router on DTensors, and returns what each rank in `ranks`
    (the ranks this process holds) saw: the error, each output's placements, global shape and
    local tensor, the collectives."""
    global COMMS
    mesh = init_device_mesh("cpu", MESH_SHAPE, mesh_dim_names=MESH_NAMES)
    inputs = {k: distribute_tensor(v, mesh, PLACEMENTS[k]) for k, v in INPUTS.items()}
    COMMS, out, err = CommDebugMode(), None, None
    SITE_COMMS.clear()
    try:
        with COMMS:
            out = router(**inputs)
    except Exception as e:  # noqa: BLE001 (what DTensor raises is the finding)
        err = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    comms = {str(k).split(".")[-1]: v for k, v in COMMS.get_comm_counts().items() if v}
    backward = run_backward(mesh, ranks) if BACKWARD is not None else [None] * len(ranks)
    views = []
    for r, bw in zip(ranks, backward):
        outputs = {}
        for name, t in (out or {}).items():
            pls, shape, loc = rank_view(t, r)
            outputs[name] = {"placements": pls, "shape": shape, "local": loc}
        views.append({"error": err, "outputs": outputs, "comms": comms, "site_comms": dict(SITE_COMMS),
                      "backward": bw})
    return views


def merge(views):
    """One record from every rank's view."""
    first = views[0]
    # A rank that timed out waiting for one that had raised is not the finding: the raise is.
    waited = lambda e: any(w in e.lower() for w in ("timeout", "pair closure", "closed by peer"))  # noqa: E731
    errors = sorted((v["error"] for v in views if v["error"] is not None), key=waited)
    seen = {"error": errors[0] if errors else None, "comms": first["comms"], "site_comms": first["site_comms"],
            "outputs": {}}
    if not errors:
        for name, o in first["outputs"].items():
            per = [v["outputs"][name] for v in views]
            seen["outputs"][name] = {"placements": o["placements"], "shapes": [p["shape"] for p in per],
                                     "locals": [p["local"] for p in per]}
    if BACKWARD is not None:
        seen["backward"] = merge_backward([v["backward"] for v in views])
    return seen


def reference():
    try:
        return router(**INPUTS), None
    except Exception as e:  # noqa: BLE001
        return None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def report(seen, how):
    ref, ref_err = reference()
    found = judge_forward(ref, ref_err, seen)
    notes = []
    if BACKWARD is not None:
        found += judge_backward(seen["backward"], notes)
    print(f"torch {torch.__version__}, {how}: {len(found)} divergence(s) ({TITLE})")
    for cls, out, detail in found:
        print(f"  {cls:<14} {out:<12} {detail}")
    comms = ", ".join(f"{k} x{v}" for k, v in seen["comms"].items()) or "none"
    print(f"  {'comms':<14} {'':<12} {comms}")
    for n in notes:
        print(f"  {'note':<14} {'':<12} {n}")
    classes = sorted({c if o == "-" else f"{c}:{o}" for c, o, _ in found})
    print("verdict classes:", ", ".join(classes) or "none")
    print("shardfuzz's model:", ", ".join(MODEL) or "none")


def gloo_rank(rank, init):
    """One rank of the gloo run (torchrun, or the fallback below)."""
    if not dist.is_initialized():
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD,
                                timeout=datetime.timedelta(seconds=60))
    views = store_views(rank, sharded([rank])[0])
    if rank == 0:
        report(merge(views), f"{WORLD} gloo process(es)")
    dist.destroy_process_group()


def store_views(rank, view):
    """Every rank's view, through the process group's key-value store: each rank posts its own,
    rank 0 reads them all. No collective, so a rank that raised cannot leave the others waiting
    (they time out in the router's collective, and that is their view)."""
    store = dist.distributed_c10d._get_default_store()
    store.set(f"shardfuzz/view/{rank}", pickle.dumps(view))
    if rank != 0:
        return [view]
    keys = [f"shardfuzz/view/{r}" for r in range(WORLD)]
    store.wait(keys, datetime.timedelta(seconds=180))
    return [pickle.loads(store.get(k)) for k in keys]


def main():
    torch.set_num_threads(1)
    if "RANK" in os.environ:  # torchrun --nproc-per-node WORLD
        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
        return gloo_rank(dist.get_rank(), None)
    if any(p.is_partial() for pls in PLACEMENTS.values() for p in pls):
        # Under LocalTensorMode, distribute_tensor leaves a Partial input as one plain tensor,
        # which the mode's collectives do not sum over the ranks.
        return spawn_gloo("a Partial input")
    dist.init_process_group("fake", rank=0, world_size=WORLD)
    with LocalTensorMode(WORLD):
        views = sharded(range(WORLD))
    err = views[0]["error"] or (views[0]["backward"] or {}).get("error") or ""
    if not any(s in err for s in ("SymInt", "symbolic sizes", "could not look up op")):
        return report(merge(views), "one process (fake process group + LocalTensorMode)")
    # LocalTensorMode cannot hold sizes that differ per rank where DTensor expects one.
    dist.destroy_process_group()
    spawn_gloo(err)


def spawn_gloo(why):
    print(f"LocalTensorMode cannot represent this case ({why}); running {WORLD} gloo processes instead")
    with tempfile.TemporaryDirectory() as td:
        torch.multiprocessing.spawn(gloo_rank, args=("file://" + os.path.join(td, "store"),), nprocs=WORLD)

# ---- the backward: the boundary program's gradients against float64 autograd on plain tensors ----


def local_loss(ts, ids, tokens, V_r):
    """One rank's loss, standing in for its experts: sum_{t,k} ts[t,k] * V_r[token t, ids[t,k]]."""
    w = V_r[tokens.reshape(-1)].reshape(*tokens.shape, E)
    return (ts * w.gather(-1, ids)).sum()


def tokens_under(placements, shape, mesh):
    """The global token indices (B*L of them, in `shape`) this rank holds under `placements`."""
    pls = [p if isinstance(p, Shard) else Replicate() for p in placements]
    return distribute_tensor(torch.arange(B * L).reshape(shape), mesh, pls).to_local()


def per_rank(tensors):
    """A tensor that is tensors[r] on rank r (a LocalTensor when every rank is in this process)."""
    if dist.get_backend() == "fake":
        from torch.distributed._local_tensor import LocalTensor
        return LocalTensor({r: tensors[r] for r in range(WORLD)})
    return tensors[dist.get_rank()]


def run_backward(mesh, ranks):
    """The boundary program on DTensor leaves, its loss's backward, every rank's gradients."""
    x_in = distribute_tensor(INPUTS["x"], mesh, [Shard(1) if BACKWARD["sp"] else Replicate()]).requires_grad_()
    W = distribute_tensor(INPUTS["gate_weight"], mesh, [Replicate()]).requires_grad_()
    b = distribute_tensor(INPUTS["gate_bias"], mesh, [Replicate()]).requires_grad_() if "gate_bias" in INPUTS else None
    eb = per_rank([INPUTS["expert_bias"]] * WORLD) if "expert_bias" in INPUTS else None
    comms, err, grads, ids = CommDebugMode(), None, {}, None
    try:
        loss, ids = program(x_in, W, b, eb, mesh, per_rank(V_RANK) if V_RANK is not None else None)
        with comms:
            loss.backward()
        grads = {"gate.weight": W.grad, "gate.bias": b.grad if b is not None else None, "x": x_in.grad}
    except Exception as e:  # noqa: BLE001
        err = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    counts = {str(k).split(".")[-1]: v for k, v in comms.get_comm_counts().items() if v}
    views = []
    for r in ranks:
        g = {n: rank_view(t, r) for n, t in grads.items() if t is not None}
        views.append({"error": err, "grads": g, "ids": rank_view(ids, r) if err is None else None, "comms": counts})
    return views


def merge_backward(views):
    first = views[0]
    errors = [v["error"] for v in views if v["error"] is not None]
    seen = {"error": errors[0] if errors else None, "comms": first["comms"], "grads": {}, "ids": None}
    if not errors:
        for name, (pls, shape, _) in first["grads"].items():
            seen["grads"][name] = {"placements": pls, "locals": [v["grads"][name][2] for v in views]}
        pls = first["ids"][0]
        locs = [v["ids"][2] for v in views]
        seen["ids"] = locs[0] if pls == ["plain tensor"] else rebuild(locs, pls)
    return seen


def reference_grads():
    """float64 autograd on the plain, unsharded router and the full loss."""
    x = INPUTS["x"].double().requires_grad_()
    W = INPUTS["gate_weight"].double().requires_grad_()
    b = INPUTS["gate_bias"].double().requires_grad_() if "gate_bias" in INPUTS else None
    eb = INPUTS["expert_bias"].double() if "expert_bias" in INPUTS else None
    ts, ids = route(F.linear(x, W, b), eb)
    local_loss(ts, ids, torch.arange(B * L).reshape(B, L), V.double()).backward()
    grads = {"gate.weight": W.grad, "gate.bias": b.grad if b is not None else None, "x": x.grad}
    return {k: v for k, v in grads.items() if v is not None}, ids


def judge_backward(seen, notes):
    """shardfuzz's gradient verdicts: replica, grad_placement, grad (missing_reduction,
    reduced_twice, wrong)."""
    found = []
    if seen["error"] is not None:
        return [("error", "-", f"only the {BACKWARD['boundary']} program raised: {seen['error']}")]
    ref, ref_ids = reference_grads()
    decided, _, _ = margins(INPUTS["x"], INPUTS["gate_weight"], INPUTS.get("gate_bias"), INPUTS.get("expert_bias"))
    if not decided.all():
        notes.append("gradients not compared: the reference's choice is a near-tie")
        return found
    if not torch.equal(seen["ids"].reshape(-1, K).sort(-1).values, ref_ids.reshape(-1, K).sort(-1).values):
        notes.append("gradients not compared: the program chose other experts")
        return found
    fwd = "S(1)" if BACKWARD["sp"] else "R"
    for name, g in seen["grads"].items():
        pls, locs = g["placements"], g["locals"]
        if pls == ["R"] and any(not torch.equal(t, locs[0]) for t in locs):
            found.append(("replica", name, f"{name}.grad is labelled R but its ranks hold different values"))
        allowed = ("R", "P(sum)") + ((fwd, "S(0)", "S(1)") if name == "x" else ())
        if any(p not in allowed and not (name == "x" and p.startswith("_S(")) for p in pls):
            found.append(("grad_placement", name, f"{name}.grad is {pls}"))
            continue
        got, want = rebuild(locs, pls).double(), ref[name]
        tol = (1e-3 if INPUTS["x"].dtype == torch.float32 else 4e-2) * float(want.abs().max()) + 1e-7
        if got.shape != want.shape or (got - want).abs().max() > tol:
            ratio = float((got * want).sum() / (want * want).sum().clamp_min(1e-300)) if got.shape == want.shape else math.nan
            key = ("reduced_twice" if abs(ratio - WORLD) < 0.01 * WORLD else
                   "missing_reduction" if abs(ratio - 1 / WORLD) < 0.01 or any(f[0] == "replica" and f[1] == name for f in found)
                   else "wrong")
            found.append(("grad", name, f"{name}.grad ({pls}) reduced is {ratio:.3f} times the reference ({key})"))
    return found


if __name__ == "__main__":
    main()
