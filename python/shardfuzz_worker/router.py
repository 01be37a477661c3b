"""The router of a forward case, written the way torchtitan writes it (TokenChoiceTopKRouter plus
the routing part of MoE.forward), with the two scatter sites written as the request's tables say
(`revision.sites`, from shardfuzz: this package keeps no copy of the revision table).
The same code runs on DTensors (the sharded run) and on plain tensors (the reference).

`label(name)` names the router value the next ops compute, so each collective can be attributed;
the labels and their order are shardfuzz's (src/subjects/router/body.rs)."""

import torch
import torch.nn.functional as F
from torch.distributed.tensor import DTensor
from torch.distributed.tensor.experimental import local_map

def scatter_site(how, t, index, value, like):
    """`t.scatter_(-1, index, value)` as a revision writes it; a local_map site takes its
    placements from `like` and `index`."""
    if how == "in_place":
        return t.scatter_(-1, index, value)
    if how == "out_of_place":
        return t.scatter(-1, index, value)
    if not isinstance(t, DTensor):
        return t.scatter_(-1, index, value)
    # An index that is not a DTensor (a plain tensor from an earlier local_map) is passed as is.
    fn = local_map(lambda m, i: m.scatter_(-1, i, value),
                   out_placements=(like.placements,),
                   in_placements=(like.placements, index.placements if isinstance(index, DTensor) else None),
                   device_mesh=like.device_mesh)
    return fn(t, index)


def score(logits, score_func):
    if score_func == "sigmoid":
        return torch.sigmoid(logits)
    if score_func == "softmax":
        return F.softmax(logits, dim=-1)
    raise NotImplementedError(f"Unknown score function {score_func}")


def choose(case, scores, expert_bias, site, label):
    """Top-k expert ids, node-limited when groups are on. Returns (ids, group mask or None)."""
    r, d = case["router"], case["dims"]
    E, K = int(d["experts"]), int(d["top_k"])
    label("scores_for_choice")
    choice = scores + expert_bias if expert_bias is not None else scores
    mask = None
    if r.get("groups"):
        G, Gk = int(r["groups"]["num_groups"]), int(r["groups"]["num_limited"])
        label("group_scores")
        grouped = choice.unflatten(-1, (G, E // G))
        group_scores = grouped.topk(2, dim=-1).values.sum(dim=-1)
        kept = torch.topk(group_scores, k=Gk, dim=-1, sorted=False).indices
        label("group_mask")
        mask = torch.ones_like(group_scores, dtype=torch.bool)
        mask = scatter_site(site, mask, kept, False, mask)
        label("scores_for_choice")
        choice = grouped.masked_fill(mask.unsqueeze(-1), float("-inf")).flatten(-2)
    label("topk_ids")
    ids = torch.topk(choice, k=K, dim=-1, sorted=False).indices
    return ids, mask


def scale(case, ts):
    r = case["router"]
    if r.get("route_norm"):
        ts = ts / (ts.sum(dim=-1, keepdim=True) + 1e-20)
    return ts * float(r.get("route_scale", 1.0))


def router(case, x, gate, gate_bias=None, expert_bias=None, label=lambda name: None):
    """Returns {output name: tensor} in shardfuzz's output order."""
    d = case["dims"]
    site1, site2 = case["revision"]["sites"]
    label("logits")
    logits = F.linear(x.float(), gate.float(), None if gate_bias is None else gate_bias.float())
    label("scores")
    scores = score(logits, case["router"]["score_func"])
    ids, group_mask = choose(case, scores, expert_bias, site1, label)
    label("topk_scores")
    ts = scores.gather(dim=-1, index=ids)
    if case["router"].get("force_load_balance"):
        # torchtitan's debug override: round-robin ids as a plain tensor (meets DTensor scores).
        B, L, K, E = int(scores.shape[0]), int(scores.shape[1]), int(d["top_k"]), int(d["experts"])
        ids = torch.arange(B * L * K, dtype=torch.int64).reshape(B, L, K) % E
        ts = scores.gather(-1, ids)
    ts = scale(case, ts)
    label("routing_map")
    routing_map = scatter_site(site2, torch.zeros_like(scores, dtype=torch.bool), ids, True, scores)
    label("counts")
    counts = routing_map.sum(dim=(0, 1))
    out = {"topk_scores": ts, "topk_ids": ids, "scores": scores, "routing_map": routing_map, "counts": counts}
    if group_mask is not None:
        out["group_mask"] = group_mask
    return out
