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
