"""The collectives real DTensor issues, each labelled with the router value being computed when it
ran (shardfuzz labels its simulated collectives the same way: `logits`, `scores`, `routing_map`, ...)."""

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# Functional collectives (what DTensor issues) and their shardfuzz names.
_FUNCOL = {
    "all_gather_into_tensor": "all_gather",
    "all_gather_into_tensor_coalesced": "all_gather",
    "reduce_scatter_tensor": "reduce_scatter",
    "reduce_scatter_tensor_coalesced": "reduce_scatter",
    "all_reduce": "all_reduce",
    "all_reduce_coalesced": "all_reduce",
    "all_to_all_single": "all_to_all",
    "shard_dim_alltoall": "all_to_all",
    "broadcast": "broadcast",
}
_NAMESPACES = ("_c10d_functional", "c10d_functional", "_c10d_functional_autograd", "_dtensor")


class CommLog(TorchDispatchMode):
    """Records `{op, mesh_dim, tensor}` per collective. `label` is set by the program as it goes;
    `groups` maps a process group's name to its mesh dim."""

    def __init__(self, mesh):
        super().__init__()
        self.label = "?"
        self.records = []
        self.groups = {}
        for d in range(mesh.ndim):
            try:
                self.groups[mesh.get_group(d).group_name] = d
            except Exception:  # noqa: BLE001 (a size-1 dim may have no group of its own)
                pass
        self._depth = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if isinstance(func, torch._ops.HigherOrderOperator):
            return func(*args, **kwargs)
        from torch.distributed.tensor import DTensor
        if any(t is DTensor or issubclass(t, DTensor) for t in types):
            return NotImplemented  # let DTensor turn the op into local ops and collectives first
        packet = getattr(func, "_overloadpacket", None)
        ns = getattr(packet, "_qualified_op_name", "").split("::")[0]
        name = getattr(packet, "__name__", "")
        if ns in _NAMESPACES and name in _FUNCOL and self._depth == 0:
            rec = {"op": _FUNCOL[name], "tensor": self.label}
            group = next((a for a in list(args) + list(kwargs.values())
                          if isinstance(a, str) and a in self.groups), None)
            if group is not None:
                rec["mesh_dim"] = self.groups[group]
            self.records.append(rec)
            self._depth += 1
            try:
                return func(*args, **kwargs)
            finally:
                self._depth -= 1
        return func(*args, **kwargs)
