"""The unsharded reference: the MoE layer's math written out in plain torch on the global tensors of a
case, with none of torchtitan's code (runs in the torchtitan venv, on rank 0 of the recorder).

It follows what torchtitan 0.3.0 computes on CPU, op for op where rounding matters:
- router: logits = x @ gate^T in the case dtype (CPU autocast does not upcast to float32), sigmoid or
  softmax, choice = scores + expert_bias (float32), node-limited group mask (top-2 sum per group,
  top Gk groups kept, the rest -inf), top-K ids, the unbiased scores gathered, route_norm
  (sum + 1e-20), route_scale; force_load_balance: ids = arange(T*K) % E over the *global* tokens
  (the sharded run does it over each rank's local tokens: not comparable when the router's tokens
  are split);
- counts: a token counts once per expert it picked (routing-map semantics);
- experts: per expert, on its rows in token order, silu(x_bf16 @ w1_bf16^T) * (x_bf16 @ w3_bf16^T)
  in bf16, then @ w2_bf16^T, cast back to the case dtype (the grouped GEMM's casts);
- combine: (expert output in float32 * score) cast back to the case dtype, summed per token in
  expert-id order (the stable expert-major order of the dispatch);
- router.score_before_experts (torchtitan 0.2.x's switch; absent or false: the above): each routed
  row is scaled by its score before the experts ((row in float32 * score) cast back to the case
  dtype), and the combine sums the K expert outputs of a token unscaled;
- shared experts: w2(silu(w1 x) * w3 x) in the case dtype; y = routed + shared;
- backward: autograd through all of it with grad_y;
- hook: n = global counts, delta = coeff * sign(mean(n) - n), delta -= mean(delta), bias += delta.

Returns {"ok": true, "outputs": {name: tensor json}} or {"ok": false, "error": {"kind", "message"}}.
A plain-math failure (K > E, groups that do not divide E, ...) is the reference's error, to compare
with the module's own."""


def compute(case):
    import torch
    import torch.nn.functional as F
    from .rank import tensor_from_json, tensor_to_json

    try:
        subj = case["subject"]
        dims = subj["dims"]
        B, L, D, Fh, E, K = (int(dims[k]) for k in ("batch", "seq", "model", "hidden", "experts", "top_k"))
        Fs = dims.get("shared_hidden")
        router = subj.get("router", {})
        groups = router.get("groups")
        sbe = bool(router.get("score_before_experts", False))
        coeff = subj.get("load_balance_coeff")
        backward = bool(subj.get("backward", True))
        dtype = torch.float32 if case.get("dtype", "f32") == "f32" else torch.bfloat16
        ts = case["data"]["tensors"]

        def leaf(name):
            return tensor_from_json(ts[name]).to(dtype).clone().requires_grad_(backward)

        x = leaf("x")
        gate = leaf("gate")
        w1, w2, w3 = leaf("w1"), leaf("w2"), leaf("w3")
        shared = None
        if Fs is not None:
            shared = (leaf("shared_w1"), leaf("shared_w2"), leaf("shared_w3"))
        bias = None
        if coeff is not None:
            if coeff <= 0:
                return {"ok": False, "error": {"kind": "AssertionError",
                                               "message": "load_balance_coeff must be positive"}}
            bias = (tensor_from_json(ts["expert_bias"]).float() if "expert_bias" in ts
                    else torch.zeros(E, dtype=torch.float32))

        T = B * L
        xt = x.reshape(T, D)
        logits = F.linear(xt, gate)
        sf = router.get("score_func", "sigmoid")
        if sf == "sigmoid":
            scores = torch.sigmoid(logits)
        elif sf == "softmax":
            scores = torch.softmax(logits, dim=-1)
        else:
            raise NotImplementedError(f"Unknown score function {sf}")
        choice = scores.detach() if bias is None else scores.detach() + bias
        if groups is not None:
            G, Gk = groups.get("num_groups"), groups.get("num_limited")
            if Gk is None:
                raise ValueError("num_limited_groups must be set when num_expert_groups is set")
            if E % G:
                raise ValueError(f"num_experts ({E}) must be divisible by num_expert_groups ({G})")
            per = E // G
            if per < 2:
                raise ValueError(f"experts_per_group ({per}) must be >= 2")
            grouped = choice.reshape(T, G, per)
            gscore = grouped.topk(2, dim=-1).values.sum(-1)
            keep = gscore.topk(Gk, dim=-1).indices
            mask = torch.ones(T, G, dtype=torch.bool).scatter_(-1, keep, False)
            choice = grouped.masked_fill(mask.unsqueeze(-1), float("-inf")).reshape(T, E)
        if K > E:
            raise RuntimeError("selected index k out of range")
        ids = choice.topk(K, dim=-1).indices
        if router.get("force_load_balance"):
            ids = torch.arange(T * K).reshape(T, K) % E
        top = scores.gather(-1, ids)
        if router.get("route_norm"):
            top = top / (top.sum(-1, keepdim=True) + 1e-20)
        top = top * float(router.get("route_scale", 1.0))

        routing = torch.zeros(T, E, dtype=torch.bool).scatter_(-1, ids, True)
        counts = routing.sum(0)

        xb = xt.bfloat16()
        routed = torch.zeros(T, D, dtype=dtype)
        contrib = []
        for e in range(E):
            tok, kk = (ids == e).nonzero(as_tuple=True)
            if tok.numel() == 0:
                continue
            s = top[tok, kk].reshape(-1, 1)
            a = (xt[tok].float() * s).to(dtype).bfloat16() if sbe else xb[tok]
            h = F.silu(a @ w1[e].bfloat16().t()) * (a @ w3[e].bfloat16().t())
            ye = (h @ w2[e].bfloat16().t()).to(dtype)
            contrib.append((tok, ye if sbe else (ye.float() * s).to(dtype)))
        for tok, v in contrib:
            routed = routed.index_add(0, tok, v)
        y = routed
        if shared is not None:
            s1, s2, s3 = shared
            y = y + F.linear(F.silu(F.linear(xt, s1)) * F.linear(xt, s3), s2)
        y = y.reshape(B, L, D)

        out = {"y": tensor_to_json(y), "tokens_per_expert": tensor_to_json(counts.float())}
        if backward:
            gy = tensor_from_json(ts["grad_y"]).to(dtype)
            y.backward(gy)
            out["x_grad"] = tensor_to_json(x.grad)
            named = {"gate": gate, "w1": w1, "w2": w2, "w3": w3}
            if shared is not None:
                named.update({"shared_w1": shared[0], "shared_w2": shared[1], "shared_w3": shared[2]})
            for n, p in named.items():
                out["grad." + n] = tensor_to_json(p.grad if p.grad is not None else torch.zeros_like(p))
        if bias is not None:
            n = counts.float()
            delta = coeff * torch.sign(n.mean() - n)
            delta = delta - delta.mean()
            out["expert_bias"] = tensor_to_json(bias + delta)
        return {"ok": True, "outputs": out}
    except Exception as e:  # noqa: BLE001
        msg = str(e)
        return {"ok": False, "error": {"kind": type(e).__name__, "message": msg.splitlines()[0] if msg else ""}}
