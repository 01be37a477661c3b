#!/usr/bin/env python3
"""shardfuzz reproducer: torchtitan's MoE router as revision `inplace_scatter` writes it, on DTensor.

Mesh [2, 1] ["cp", "tp"]; B=2 L=3 D=1 E=2 K=1, f32; x [S(1), S(1)], gate [R, R].
shardfuzz's model of DTensor (torch-2.14 rules, size1=normalize) says:
    error:-:inplace_scatter:torch-2.14:RuntimeError:cannot_shard_unevenly_distributed_tensor

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

TITLE = "inplace_scatter / torch-2.14 / size1=normalize"
MODEL = ["error"]  # the verdict classes shardfuzz's model gives
RULES = "torch-2.14"
MESH_SHAPE, MESH_NAMES, WORLD = (2, 1), ("cp", "tp"), 2
B, L, D, E, K = 2, 3, 1, 2, 1
SCORE_FUNC, GROUPS, ROUND_ROBIN = "softmax", None, False

INPUTS = {
    "x": torch.tensor([
        0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    ], dtype=torch.float32).reshape(2, 3, 1),
    "gate_weight": torch.tensor([
        0.0, 0.0,
    ], dtype=torch.float32).reshape(2, 1),
}
PLACEMENTS = {"x": [Shard(1), Shard(1)], "gate_weight": [Replicate(), Replicate()]}
CONTRACT = ["P(sum)", "R"]  # the counts' placements the experts require (layout.counts_contract, size1=normalize)
BACKWARD = None  # a forward case


def router(x, gate_weight):
    """torchtitan's TokenChoiceTopKRouter.forward and the routing part of MoE.forward, revision inplace_scatter."""
    scores = F.linear(x.float(), gate_weight.float())  # the gate, in float32
    scores = F.softmax(scores, dim=-1)
    scores_for_choice = scores
    topk_ids = torch.topk(scores_for_choice, k=K, dim=-1, sorted=False).indices
    topk_scores = scores.gather(dim=-1, index=topk_ids)
    topk_scores = topk_scores * 1.0  # route_scale
    with site("routing_map"):
        routing_map = torch.zeros_like(scores, dtype=torch.bool)
        routing_map.scatter_(-1, topk_ids, True)  # in place on the DTensor (torchtitan#3515)
    counts = routing_map.sum(dim=(0, 1))  # tokens per expert
    return {"topk_scores": topk_scores, "topk_ids": topk_ids, "scores": scores, "routing_map": routing_map, "counts": counts}


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


if __name__ == "__main__":
    main()
