"""Shared helpers for the PyTorch DTensor fact checks (shardfuzz).

All ranks run in one process: fake process group + LocalTensorMode. Every DTensor input is built
explicitly from per-rank local tensors (a LocalTensor holding one tensor per rank) with
DTensor.from_local(..., shape=, stride=), so Replicate and Partial inputs carry real per-rank values
(dtensor.md section 8 pitfall). Each case runs with the sharding-propagation caches cleared, under
CommDebugMode, and prints one JSON line: placements (str and repr), global shape, local shape per
rank, dtype, comm counts, whether full_tensor() matches the plain-tensor reference, or the exception
type, str(e) verbatim and its first line.

Usage in a check script:
    from _common import *
    H = Harness(world=4)
    m = H.mesh((2,))
    H.case("label", lambda: ..., ref=lambda: ...)
"""

import json
import os
import sys
import traceback

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

torch.set_num_threads(1)
import torch.distributed as dist
from torch.distributed._local_tensor import LocalTensor, LocalTensorMode
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard
from torch.distributed.tensor.debug import CommDebugMode

try:
    from torch.distributed.tensor.placement_types import _StridedShard
except Exception:  # pragma: no cover
    _StridedShard = None

from torch.distributed.tensor.debug import _clear_sharding_prop_cache
from torch.utils._debug_mode import DebugMode

R = Replicate()
P = Partial()
S = Shard

VERSION = torch.__version__


def pstr(p):
    """Compact placement string used in our tables: R, S(d), P(op), _S(d,sf)."""
    if _StridedShard is not None and isinstance(p, _StridedShard):
        return f"_S({p.dim},{p.split_factor})"
    if isinstance(p, Shard):
        return f"S({p.dim})"
    if isinstance(p, Replicate):
        return "R"
    if isinstance(p, Partial):
        return f"P({p.reduce_op})"
    return repr(p)


def coords_of(mesh_shape, rank):
    c = []
    for d in range(len(mesh_shape)):
        prod = 1
        for s in mesh_shape[d + 1 :]:
            prod *= s
        c.append((rank // prod) % mesh_shape[d])
    return c


def _chunk(t, n, idx, dim):
    chunks = list(torch.chunk(t, n, dim=dim))
    if idx < len(chunks):
        return chunks[idx].contiguous()
    shape = list(t.shape)
    shape[dim] = 0
    return t.new_empty(shape)


GLOO = os.environ.get("SHARDFUZZ_MODE", "local") == "gloo"


class Harness:
    """One process simulating every rank (fake PG + LocalTensorMode), or, with SHARDFUZZ_MODE=gloo
    under torch.distributed.run, one real gloo process per rank (rank 0 prints)."""

    def __init__(self, world):
        self.world = world
        self.gloo = GLOO
        if self.gloo:
            import datetime
            dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
            self.rank = dist.get_rank()
            assert dist.get_world_size() == world
        else:
            if not dist.is_initialized():
                dist.init_process_group("fake", rank=0, world_size=world)
            self.rank = 0
            self.mode = LocalTensorMode(frozenset(range(world)))
            self.mode.__enter__()
        self.results = []
        self.print(json.dumps({"torch": VERSION, "git": torch.version.git_version,
                               "world": world,
                               "ranks": "one gloo process per rank" if self.gloo
                               else "one process (fake PG + LocalTensorMode)",
                               "threads": torch.get_num_threads()}))

    def print(self, s):
        if self.rank == 0:
            print(s, flush=True)

    def gather(self, obj):
        if not self.gloo:
            return None
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def mesh(self, shape, names=None):
        return init_device_mesh("cpu", tuple(shape), mesh_dim_names=names)

    # ---- building inputs -------------------------------------------------
    def local_for_rank(self, full, mesh_shape, placements, rank):
        """Local tensor of `rank` for a global `full` (chunk semantics, left-to-right nesting).
        Partial(sum) on a mesh dim of size n: coordinate 0 holds full - (n-1)*delta, others delta
        (delta = 0.5 + arange); Partial(max/min): coordinate 0 holds full, others full -/+ 7."""
        c = coords_of(mesh_shape, rank)
        t = full.clone()
        for md, p in enumerate(placements):
            n = mesh_shape[md]
            k = c[md]
            if isinstance(p, Shard) and not (_StridedShard is not None and isinstance(p, _StridedShard)):
                t = _chunk(t, n, k, p.dim)
            elif _StridedShard is not None and isinstance(p, _StridedShard):
                sf = p.split_factor
                pieces = torch.chunk(t, sf, dim=p.dim)
                t = torch.cat([_chunk(pc, n, k, p.dim) for pc in pieces], dim=p.dim)
            elif isinstance(p, Partial):
                op = p.reduce_op
                if op in ("sum", "avg"):
                    half = 0.5 if t.dtype.is_floating_point else 1
                    delta = (torch.arange(t.numel()).reshape(t.shape) % 3 + half).to(t.dtype)
                    if op == "avg":
                        base = t * n
                    else:
                        base = t
                    t = base - (n - 1) * delta if k == 0 else delta
                elif op == "max":
                    t = t if k == 0 else t - 7
                elif op == "min":
                    t = t if k == 0 else t + 7
                else:
                    raise ValueError(op)
        return t.contiguous()

    def dt(self, full, mesh, placements, requires_grad=False):
        full = full.contiguous()
        ms = tuple(mesh.shape)
        if self.gloo:
            lt = self.local_for_rank(full, ms, placements, self.rank)
        else:
            locs = {r: self.local_for_rank(full, ms, placements, r) for r in range(self.world)}
            lt = LocalTensor(locs)
        d = DTensor.from_local(lt, mesh, placements, run_check=False,
                               shape=full.shape, stride=full.stride())
        if requires_grad:
            d.requires_grad_(True)
        return d

    # ---- describing outputs -----------------------------------------------
    def local_shapes(self, x):
        loc = x.to_local()
        if self.gloo:
            return self.gather(list(loc.shape))
        if isinstance(loc, LocalTensor):
            return [list(loc._local_tensors[r].shape) for r in sorted(loc._local_tensors)]
        return [list(loc.shape)]

    def describe(self, x):
        if isinstance(x, DTensor):
            d = {
                "placements": [pstr(p) for p in x.placements],
                "repr": repr(tuple(x.placements)),
                "shape": [int(s) if not isinstance(s, torch.SymInt) else str(s) for s in x.shape],
                "local_shapes": self.local_shapes(x),
                "dtype": str(x.dtype).replace("torch.", ""),
            }
            if self.gloo:
                shapes = self.gather(list(x.shape))
                if any(sh != shapes[0] for sh in shapes):
                    d["rank_global_shapes"] = shapes
            return d
        if isinstance(x, torch.Tensor):
            return {"plain_tensor": list(x.shape), "dtype": str(x.dtype)}
        if isinstance(x, (tuple, list)):
            return [self.describe(y) for y in x]
        return repr(x)

    def _full(self, x):
        if isinstance(x, DTensor):
            f = x.full_tensor()
            if isinstance(f, LocalTensor):
                vals = list(f._local_tensors.values())
                for v in vals[1:]:
                    if not (v.shape == vals[0].shape and torch.equal(v, vals[0])):
                        return None
                return vals[0]
            return f
        return x

    def _match(self, out, ref):
        if self.gloo:
            try:
                res = self._match1(out, ref)
            except Exception as e:
                res = f"check failed: {type(e).__name__}: {e}"
            allres = self.gather(res)
            return allres[0] if all(r == allres[0] for r in allres) else allres
        return self._match1(out, ref)

    def _match1(self, out, ref):
        if isinstance(out, (tuple, list)):
            return all(self._match1(o, r) is True for o, r in zip(out, ref))
        f = self._full(out)
        if f is None:
            return "ranks-differ"
        if isinstance(ref, torch.Tensor) and isinstance(f, torch.Tensor):
            if f.shape != ref.shape or f.dtype != ref.dtype:
                return False
            if f.dtype.is_floating_point:
                return bool(torch.allclose(f, ref, atol=1e-5, rtol=1e-5, equal_nan=True))
            return bool(torch.equal(f, ref))
        return None

    # ---- running a case -------------------------------------------------
    @staticmethod
    def condense(debug_string):
        """Top-level DTensor ops from a DebugMode trace: 'op(arg placements) -> out [redistributions]'."""
        steps = []
        for line in debug_string.splitlines():
            if line.startswith("  aten::") and "dt:" in line:
                steps.append({"op": line.strip(), "out": None, "redist": []})
            elif steps and "-> output:" in line and steps[-1]["out"] is None:
                steps[-1]["out"] = line.split("-> output:")[1].strip()
            elif steps and "redistribute_input" in line:
                steps[-1]["redist"].append(line.strip())
        res = []
        for st in steps:
            s = st["op"]
            if st["out"] is not None:
                s += " -> " + st["out"]
            if st["redist"]:
                s += " {" + "; ".join(st["redist"]) + "}"
            res.append(s)
        return res

    def case(self, label, fn, ref=None, check=True, trace=False):
        _clear_sharding_prop_cache()
        rec = {"case": label}
        dm = DebugMode(record_torchfunction=False) if trace else None
        try:
            cm = CommDebugMode()
            try:
                if dm is not None:
                    with cm, dm:
                        out = fn()
                else:
                    with cm:
                        out = fn()
            finally:
                if dm is not None:
                    rec["trace"] = self.condense(dm.debug_string())
            rec["ok"] = True
            rec["out"] = self.describe(out)
            rec["comms"] = {str(k).split(".")[-1] if False else str(k): v
                            for k, v in cm.get_comm_counts().items() if v}
            if ref is not None and check:
                try:
                    rec["match"] = self._match(out, ref())
                except Exception as e:  # reference or full_tensor failed
                    rec["match"] = f"check failed: {type(e).__name__}: {e}"
        except Exception as e:
            rec["ok"] = False
            rec["exc"] = type(e).__name__
            rec["msg"] = str(e)
            rec["first_line"] = str(e).split("\n")[0]
            if os.environ.get("SHARDFUZZ_TB"):
                rec["tb"] = traceback.format_exc()
            if self.gloo:
                errs = self.gather((rec["exc"], rec["msg"]))
                if any(e2 != errs[0] for e2 in errs):
                    rec["per_rank"] = errs
        _clear_sharding_prop_cache()
        self.results.append(rec)
        self.print(json.dumps(rec))
        return rec


def main(sections):
    """sections: {world_size: fn(H)}. Without arguments, re-runs this script once per world size
    in a fresh interpreter (one fake PG per process); with `--world N` runs that section only."""
    import subprocess

    if "--world" in sys.argv:
        w = int(sys.argv[sys.argv.index("--world") + 1])
        H = Harness(w)
        sections[w](H)
        if H.gloo:
            dist.barrier()
            dist.destroy_process_group()
        return
    only = None
    if "--only" in sys.argv:
        only = int(sys.argv[sys.argv.index("--only") + 1])
    rc = 0
    for w in sorted(sections):
        if only is not None and w != only:
            continue
        if GLOO:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   "--nproc_per_node", str(w), sys.argv[0], "--world", str(w)]
        else:
            cmd = [sys.executable, sys.argv[0], "--world", str(w)]
        r = subprocess.run(cmd)
        rc = rc or r.returncode
    sys.exit(rc)
