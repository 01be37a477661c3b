"""Records what spmd_types 0.2.3 does at the places torchtitan's MoE layer leans on beyond the
local typing rules, for the `spmd` crate to replay (src/spmd/tests/layer.rs).

Run with the torchtitan venv (spmd_types 0.2.3, torch 2.14.0):

    ~/.cache/shardfuzz/venv-torchtitan-0.3.0-torch-2.14.0/bin/python \
        docs/pytorch-checks/spmd_types_layer.py tests/pytorch/spmd/layer.jsonl

Fake process group + LocalTensorMode, as spmd_types_rules.py. One line per case:

- `reinterpret_mesh`: a value typed on the dense mesh (dp, cp, tp) retagged onto the sparse mesh
  (dp_replicate, efsdp, ep) built over the same ranks: the new type or the checker's message;
- `sum_sharded`: global mode (`typecheck(local=False)`), a (B, L, E) value asserted with
  per-axis types where S(d) shards token dim d, summed over dims (0, 1): the output type;
- `grouped_mm`: local mode, `torch._grouped_mm(A, B_t, offs=offs)` typing with given operand
  types: the output type or the message;
- `local_map`: local mode, a body returning its input unchanged, `out_types` declaring one
  type: the output type or the message.
"""

import json
import math
import sys

import spmd_types as spmd
import torch
import torch.distributed as dist
from spmd_types._checker import assert_type, typecheck
from spmd_types._mesh_axis import _reset
from torch.distributed._local_tensor import LocalTensorMode
from torch.distributed.device_mesh import init_device_mesh
from torch.testing._internal.distributed.fake_pg import FakeStore

HINT = "\n\nSet SPMD_TYPES_TRACEBACK_FILTERING=off to see the full, unfiltered traceback."
TY = {"R": spmd.R, "I": spmd.I, "V": spmd.V, "P": spmd.P}


def parse(s):
    return spmd.S(int(s[2:-1])) if s.startswith("S(") else TY[s]


def msg_of(e):
    m = e.args[0] if e.args else str(e)
    return m.replace(HINT, "")


def ty_of(t):
    return {repr(a): repr(v) for a, v in spmd.get_local_type(t).items()}


class Env:
    def __init__(self, dense, sparse=None):
        if dist.is_initialized():
            dist.destroy_process_group()
        _reset()
        self.world = math.prod(dense)
        dist.init_process_group(backend="fake", rank=0, world_size=self.world, store=FakeStore())
        self.dense = init_device_mesh("cpu", dense, mesh_dim_names=("dp", "cp", "tp"))
        self.sparse = None
        if sparse is not None:
            self.sparse = init_device_mesh("cpu", sparse, mesh_dim_names=("dp_replicate", "efsdp", "ep"))
        self.mode = LocalTensorMode(self.world)
        self.mode.__enter__()

    def typed(self, shape, types, dtype=torch.float32):
        t = self.mode.rank_map(lambda r: (torch.arange(math.prod(shape)) % 5 + r).reshape(shape).to(dtype))
        assert_type(t, {self.dense.get_group(k): parse(v) for k, v in types.items()})
        return t

    def close(self):
        self.mode.__exit__(None, None, None)
        dist.destroy_process_group()
        _reset()


def named(d, mesh, names):
    return {k: v for k, v in d.items() if any(k == repr(mesh.get_group(n)) for n in names if mesh[n].size() > 1)}


MESHES = [
    ((1, 1, 2), (1, 1, 2)),
    ((2, 1, 2), (1, 2, 2)),
    ((2, 1, 1), (1, 1, 2)),
    ((4, 1, 1), (1, 2, 2)),
    ((1, 1, 4), (1, 2, 2)),
    ((2, 2, 1), (1, 2, 2)),
    ((2, 1, 2), (2, 1, 2)),
    ((1, 2, 2), (1, 1, 4)),
]
TYPES = ["V", "R", "I", "P"]


def reinterpret_cases(out):
    for dense, sparse in MESHES:
        env = Env(dense, sparse)
        axes = [n for n, s in zip(("dp", "cp", "tp"), dense) if s > 1]
        combos = [[]]
        for _ in axes:
            combos = [c + [t] for c in combos for t in TYPES]
        with spmd.set_current_mesh(env.dense), typecheck():
            for combo in combos:
                types = dict(zip(axes, combo))
                x = env.typed([4, 2], types)
                line = {"case": "reinterpret_mesh", "dense": list(dense), "sparse": list(sparse), "types": types}
                try:
                    y = spmd.reinterpret_mesh(x, env.sparse)
                    line["out"] = ty_of(y)
                except spmd.SpmdTypeError as e:
                    line["error"] = msg_of(e)
                out.append(line)
        env.close()


def sum_cases(out):
    """Types as torchtitan's layouts give them: V on an axis that shards a token dim (dp: dim 0,
    cp and tp: dim 1, in that order), with the explicit PartitionSpec."""
    env = Env((2, 2, 2))
    with spmd.set_current_mesh(env.dense), typecheck(local=False):
        for dp_t in ["V", "R"]:
            for cp_t in ["V", "R"]:
                for tp_t in ["V", "R", "I"]:
                    types = {"dp": dp_t, "cp": cp_t, "tp": tp_t}
                    g = env.dense.get_group
                    d0 = g("dp") if dp_t == "V" else None
                    d1 = tuple(g(n) for n, t in (("cp", cp_t), ("tp", tp_t)) if t == "V")
                    d1 = None if not d1 else d1[0] if len(d1) == 1 else d1
                    t = env.mode.rank_map(lambda r: (torch.arange(32) % 5 + r).reshape(2, 4, 4).float())
                    line = {"case": "sum_sharded", "dense": [2, 2, 2], "types": types, "dims": [0, 1]}
                    try:
                        assert_type(t, {g(k): TY[v] for k, v in types.items()},
                                    partition_spec=spmd.PartitionSpec(d0, d1, None))
                        line["out"] = ty_of(t.sum(dim=(0, 1)))
                    except spmd.SpmdTypeError as e:
                        line["error"] = msg_of(e)
                    out.append(line)
    env.close()


def grouped_mm_cases(out):
    env = Env((2, 1, 2))
    combos = [
        ({"dp": "V", "tp": "R"}, {"dp": "R", "tp": "V"}, {"dp": "P", "tp": "R"}),
        ({"dp": "V", "tp": "R"}, {"dp": "R", "tp": "V"}, {"dp": "V", "tp": "R"}),
        ({"dp": "I", "tp": "R"}, {"dp": "R", "tp": "V"}, {"dp": "V", "tp": "R"}),
        ({"dp": "V", "tp": "V"}, {"dp": "R", "tp": "R"}, {"dp": "V", "tp": "P"}),
    ]
    with spmd.set_current_mesh(env.dense), typecheck():
        for a_t, b_t, o_t in combos:
            a = env.typed([4, 8], a_t, torch.bfloat16)
            b = env.typed([2, 8, 8], b_t, torch.bfloat16)
            offs = env.typed([2], o_t, torch.int32)
            line = {"case": "grouped_mm", "dense": [2, 1, 2], "types": [a_t, b_t, o_t]}
            try:
                line["out"] = ty_of(torch._grouped_mm(a, b, offs=offs))
            except spmd.SpmdTypeError as e:
                line["error"] = msg_of(e)
            except Exception as e:  # the op itself on CPU
                line["unsupported"] = f"{type(e).__name__}: {e}"
            out.append(line)
    env.close()


def local_map_cases(out):
    env = Env((1, 1, 2))
    with spmd.set_current_mesh(env.dense), typecheck():
        for body_t in TYPES:
            for out_t in TYPES:
                x = env.typed([4, 2], {"tp": body_t})
                f = spmd.local_map(out_types={env.dense.get_group("tp"): parse(out_t)})(lambda v: v * 2)
                line = {"case": "local_map", "dense": [1, 1, 2], "body": {"tp": body_t}, "declared": {"tp": out_t}}
                try:
                    line["out"] = ty_of(f(x))
                except spmd.SpmdTypeError as e:
                    line["error"] = msg_of(e)
                out.append(line)
    env.close()


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "tests/pytorch/spmd/layer.jsonl"
    meta = {"spmd_types": __import__("importlib.metadata").metadata.version("spmd_types"), "torch": torch.__version__}
    rows = []
    for f in (reinterpret_cases, sum_cases, grouped_mm_cases, local_map_cases):
        try:
            f(rows)
        except Exception as e:
            print(f.__name__, "failed:", repr(e), file=sys.stderr)
            raise
    with open(path, "w") as fh:
        for row in rows:
            row = dict(row, versions=meta)
            fh.write(json.dumps(row) + "\n")
    print(len(rows), "lines")


if __name__ == "__main__":
    main()
