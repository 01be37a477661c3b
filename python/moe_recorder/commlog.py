"""What the real MoE layer communicates, seen from two places (runs in the torchtitan venv).

1. `SpmdDist`: spmd_types sends every collective through a replaceable module
   (`spmd_types._dist.dist`). This proxy logs each call with the spmd_types-level name and
   forwards it to torch.distributed. gloo's list `all_to_all` refuses chunks of unequal size, so
   every list exchange is carried out as one `all_to_all_single` with split sizes (same data; the
   same op on every rank, so DETAIL's cross-rank check sees no difference between an even and an
   uneven exchange).
2. `C10dLog`: a TorchDispatchMode that sees the c10d ops every eager collective turns into
   (`c10d.allreduce_`, `c10d.alltoall_base_`, ...) and the functional collectives DTensor and the
   partial_dtensor dispatcher issue (`_c10d_functional.*`). This is the complete, backend-neutral log.

Each record: op, axes (the mesh axes whose process group it ran on: one group can serve several
axes), ranks of the group, bytes sent by this rank, phase (parallelize / forward / backward /
hook), `via` (the c10d or functional op), and for exchanges the split sizes."""

import os

import torch
import torch.distributed as dist
from torch.utils._python_dispatch import TorchDispatchMode


class Groups:
    """Names process groups after the mesh axes that use them. One group can serve several axes
    (DeviceMesh hands out the world group for any axis that spans every rank, and an axis of a
    second mesh over the same ranks may get the same group), so a group has a list of axes."""

    def __init__(self):
        self.by_name = {}

    def add(self, axis, pg):
        try:
            key = pg.group_name
        except Exception:  # noqa: BLE001
            return
        axes = self.by_name.setdefault(key, [])
        if axis not in axes:
            axes.append(axis)

    def describe(self, pg):
        """(axes, ranks) of a python ProcessGroup, a torchbind one, or None (world)."""
        if pg is None:
            pg = dist.group.WORLD
        if type(pg).__name__ == "ScriptObject":
            try:
                pg = dist.ProcessGroup.unbox(pg)
            except Exception:  # noqa: BLE001
                return ["?"], None
        if isinstance(pg, str):
            key = pg
            try:
                from torch.distributed.distributed_c10d import _resolve_process_group
                pg = _resolve_process_group(key)
            except Exception:  # noqa: BLE001
                return list(self.by_name.get(key, [key])), None
        try:
            key = pg.group_name
        except Exception:  # noqa: BLE001
            key = None
        try:
            ranks = dist.get_process_group_ranks(pg)
        except Exception:  # noqa: BLE001
            ranks = None
        return list(self.by_name.get(key, ["world"] if pg is dist.group.WORLD else ["?"])), ranks


def _nbytes(t):
    if isinstance(t, torch.Tensor):
        return int(t.numel() * t.element_size())
    if isinstance(t, (list, tuple)):
        return sum(_nbytes(x) for x in t)
    return 0


class State:
    phase = "setup"


class SpmdDist:
    """Stand-in for torch.distributed inside spmd_types (see module doc)."""

    def __init__(self, groups, state):
        self._groups = groups
        self._state = state
        self.records = []

    def __getattr__(self, name):
        return getattr(dist, name)

    def _log(self, op, group, nbytes, **extra):
        axes, ranks = self._groups.describe(group)
        rec = {"op": op, "axes": axes, "ranks": ranks, "bytes": nbytes,
               "phase": self._state.phase, "via": "spmd_types"}
        rec.update(extra)
        self.records.append(rec)

    def all_reduce(self, tensor, op=dist.ReduceOp.SUM, group=None, async_op=False):
        self._log("all_reduce", group, _nbytes(tensor))
        return dist.all_reduce(tensor, op=op, group=group, async_op=async_op)

    def all_gather_into_tensor(self, output_tensor, input_tensor, group=None, async_op=False):
        self._log("all_gather", group, _nbytes(input_tensor))
        return dist.all_gather_into_tensor(output_tensor, input_tensor, group=group, async_op=async_op)

    def all_gather(self, tensor_list, tensor, group=None, async_op=False):
        self._log("all_gather", group, _nbytes(tensor), sizes=[list(t.shape) for t in tensor_list])
        return dist.all_gather(tensor_list, tensor, group=group, async_op=async_op)

    def reduce_scatter_tensor(self, output, input, op=dist.ReduceOp.SUM, group=None, async_op=False):
        self._log("reduce_scatter", group, _nbytes(input))
        return dist.reduce_scatter_tensor(output, input, op=op, group=group, async_op=async_op)

    def reduce_scatter(self, output, input_list, op=dist.ReduceOp.SUM, group=None, async_op=False):
        self._log("reduce_scatter", group, _nbytes(input_list), sizes=[list(t.shape) for t in input_list])
        return dist.reduce_scatter(output, input_list, op=op, group=group, async_op=async_op)

    def all_to_all(self, output_tensor_list, input_tensor_list, group=None, async_op=False):
        ins = [int(t.shape[0]) if t.dim() else 1 for t in input_tensor_list]
        outs = [int(t.shape[0]) if t.dim() else 1 for t in output_tensor_list]
        even = len(set(tuple(t.shape) for t in input_tensor_list + output_tensor_list)) <= 1
        self._log("all_to_all", group, _nbytes(input_tensor_list), input_splits=ins, output_splits=outs,
                  even=even)
        if os.environ.get("MOE_RECORDER_NO_A2A_FALLBACK"):
            return dist.all_to_all(output_tensor_list, input_tensor_list, group=group, async_op=async_op)
        # Always one all_to_all_single over dim 0 with split sizes (gloo's list all_to_all refuses
        # unequal chunks; using the single form on every call keeps all ranks issuing the same op
        # even when one rank's exchange happens to be even and another's is not).
        rest = list(input_tensor_list[0].shape[1:]) if input_tensor_list and input_tensor_list[0].dim() else []
        inp = torch.cat([t.reshape([-1] + rest) for t in input_tensor_list], dim=0)
        out = torch.empty([sum(outs)] + rest, dtype=inp.dtype, device=inp.device)
        dist.all_to_all_single(out, inp, output_split_sizes=outs, input_split_sizes=ins, group=group)
        for dst, piece in zip(output_tensor_list, torch.split(out, outs, dim=0)):
            dst.copy_(piece.reshape(dst.shape))
        return None


_C10D = {
    "allreduce_": "all_reduce", "allgather_": "all_gather", "allgather_into_tensor_coalesced_": "all_gather",
    "_allgather_base_": "all_gather", "reduce_scatter_": "reduce_scatter",
    "_reduce_scatter_base_": "reduce_scatter", "reduce_scatter_tensor_coalesced_": "reduce_scatter",
    "alltoall_": "all_to_all", "alltoall_base_": "all_to_all", "broadcast_": "broadcast",
    "scatter_": "scatter", "gather_": "gather", "barrier": "barrier", "send": "send", "recv_": "recv",
    "allreduce_coalesced_": "all_reduce",
}
_FUNCOL = {
    "all_gather_into_tensor": "all_gather", "all_gather_into_tensor_coalesced": "all_gather",
    "reduce_scatter_tensor": "reduce_scatter", "reduce_scatter_tensor_coalesced": "reduce_scatter",
    "all_reduce": "all_reduce", "all_reduce_": "all_reduce", "all_reduce_coalesced": "all_reduce",
    "all_to_all_single": "all_to_all", "broadcast": "broadcast",
}


class C10dLog(TorchDispatchMode):
    """Logs c10d and functional-collective ops as they reach the dispatcher (see module doc)."""

    def __init__(self, groups, state):
        super().__init__()
        self._groups = groups
        self._state = state
        self.records = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if isinstance(func, torch._ops.HigherOrderOperator):
            return func(*args, **kwargs)
        from torch.distributed.tensor import DTensor
        if any(t is DTensor or issubclass(t, DTensor) for t in types):
            return NotImplemented
        packet = getattr(func, "_overloadpacket", None)
        qual = getattr(packet, "_qualified_op_name", "")
        ns, _, name = qual.partition("::")
        op = None
        if ns == "c10d":
            op = _C10D.get(name)
        elif ns in ("_c10d_functional", "_c10d_functional_autograd", "c10d_functional"):
            op = _FUNCOL.get(name)
        if op is not None:
            self.records.append(self._record(op, ns, name, args, kwargs))
        return func(*args, **kwargs)

    def _record(self, op, ns, name, args, kwargs):
        rec = {"op": op, "phase": self._state.phase, "via": f"{ns}.{name}"}
        group = None
        for a in list(args) + list(kwargs.values()):
            if type(a).__name__ == "ScriptObject" or isinstance(a, dist.ProcessGroup):
                group = a
                break
            if isinstance(a, str) and a not in ("sum", "avg", "max", "min", "product", "premul_sum"):
                group = a  # functional collectives name their group last
        rec["axes"], rec["ranks"] = self._groups.describe(group)
        # bytes: the first tensor argument (or list of tensors) that is an input.
        first = args[0] if args else None
        if name in ("alltoall_base_",):
            first = args[1]
            rec["output_splits"], rec["input_splits"] = list(args[3]), list(args[4])
        elif name == "alltoall_":
            first = args[1]
        elif name in ("allgather_",):
            first = args[1]
        elif name in ("_allgather_base_",):
            first = args[1]
        elif name in ("reduce_scatter_", "_reduce_scatter_base_"):
            first = args[1]
        elif name == "all_to_all_single":
            rec["output_splits"], rec["input_splits"] = list(args[1]), list(args[2])
        rec["bytes"] = _nbytes(first)
        return rec
