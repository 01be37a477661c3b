"""Which registry each router op uses per torch version (single-dim / op_strategy / rule / decomp),
with function name, file:line, allow_uneven_sharding, allow_unbacked_sharding."""
import inspect, torch
from torch.distributed.tensor import DTensor
aten = torch.ops.aten
prop = DTensor._op_dispatcher.sharding_propagator
ops = ["t.default", "view.default", "_unsafe_view.default", "reshape.default", "mm.default", "addmm.default",
       "_to_copy.default", "sigmoid.default", "_softmax.default", "add.Tensor", "mul.Tensor", "mul.Scalar", "div.Tensor",
       "sum.dim_IntList", "topk.default", "sort.stable", "sort.default", "gather.default", "scatter.value", "scatter_.value",
       "scatter.src", "scatter_.src", "scatter_add.default", "masked_fill.Scalar", "masked_fill_.Scalar", "ones_like.default",
       "zeros_like.default", "unsqueeze.default", "cumsum.default", "new_zeros.default", "new_empty.default",
       "expand.default", "sigmoid_backward.default", "_softmax_backward_data.default", "neg.default", "histc.default",
       "bincount.default", "detach.default", "clone.default", "copy_.default"]
print("torch", torch.__version__)
for name in ops:
    pkt, ov = name.split(".")
    op = getattr(getattr(aten, pkt), ov)
    rows = []
    sd = prop.op_single_dim_strategy_funcs.get(op)
    if sd is not None:
        f = sd.func
        src = inspect.getsourcefile(f).split("torch/distributed/tensor/")[-1]
        rows.append(f"single-dim {f.__name__} @ {src}:{inspect.getsourcelines(f)[1]} uneven={sd.allow_uneven_sharding} unbacked={sd.allow_unbacked_sharding}")
    st = prop.op_strategy_funcs.get(op)
    if st is not None:
        src = inspect.getsourcefile(st).split("torch/distributed/tensor/")[-1]
        rows.append(f"op_strategy {st.__name__} @ {src}:{inspect.getsourcelines(st)[1]}" + (" (shadowed by single-dim)" if sd is not None else ""))
    r = prop.op_to_rules.get(op)
    if r is not None:
        rows.append(f"rule {r.__name__}")
    si = prop.op_to_schema_info.get(op) if hasattr(prop, "op_to_schema_info") else None
    if not rows:
        rows.append("UNREGISTERED (decomposition or error)")
    print(f"{name:34s} " + " | ".join(rows))
