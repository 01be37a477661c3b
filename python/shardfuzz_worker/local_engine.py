"""Engine `local`: every rank in this one process, with a fake process group and LocalTensorMode
(a LocalTensor holds one tensor per rank; collectives are computed on them). Fast: no process per
rank, no gloo. A run yields a *status*: what every rank saw (see `describe`)."""

import math

import torch
import torch.distributed as dist
from torch.distributed._local_tensor import LocalTensor, LocalTensorMode
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor

from . import common


class Unrepresentable(Exception):
    """LocalTensorMode cannot hold what this case does (ranks disagree on a global shape)."""


def ensure_world(world):
    """A fake process group of `world` ranks (re-created when the world size changes)."""
    if dist.is_initialized():
        if dist.get_world_size() == world:
            return
        dist.destroy_process_group()
    dist.init_process_group("fake", rank=0, world_size=world)


def rank_int(s, r):
    """Rank r's value of a size that LocalTensorMode may hold per rank (a LocalIntNode)."""
    if isinstance(s, int):
        return s
    node = getattr(s, "node", None)
    local = getattr(node, "_local_ints", None)
    if local is not None:
        return int(local[r])
    return int(s)


class Ranks:
    """The per-rank view the programs need: `world`, and `rank_map(fn)`, a tensor that is fn(r) on
    rank r."""

    def __init__(self, mode, world):
        self.mode, self.world = mode, world

    def rank_map(self, fn):
        return self.mode.rank_map(fn)

    def dtensor(self, full, mesh, pls):
        """`full` distributed as distribute_tensor lays it out (from_local of every rank's piece,
        with the global shape and stride given)."""
        ms = list(mesh.shape)
        return common.wrap(self.rank_map(lambda r: common.local_piece(full, ms, pls, r)), mesh, pls, full)

    def locals_of(self, t):
        """Every rank's local tensor of a DTensor (or a plain/Local tensor), detached."""
        loc = common.local_of(t)
        if isinstance(loc, LocalTensor):
            return [loc._local_tensors[r].detach().clone() for r in range(self.world)]
        return [loc.detach().clone() for _ in range(self.world)]

    def global_shapes(self, t):
        return [[rank_int(s, r) for s in t.shape] for r in range(self.world)]

    def describe(self, t):
        """A DTensor as every rank sees it: placements (None for a plain tensor), each rank's
        global shape and local tensor."""
        pls = [common.placement_str(p) for p in t.placements] if isinstance(t, DTensor) else None
        return {"placements": pls, "shapes": self.global_shapes(t), "locals": self.locals_of(t)}

    @staticmethod
    def is_timeout(_e):
        return False


class LocalEngine:
    name = "local"

    def run(self, case, program):
        """Runs `program(ranks, mesh)` (which returns a status dict) with every rank in this
        process. Raises Unrepresentable when LocalTensorMode cannot hold the case."""
        mesh_shape = [int(s) for s in case["mesh"]["shape"]]
        world = math.prod(mesh_shape)
        ensure_world(world)
        common.clear_caches()
        try:
            with LocalTensorMode(frozenset(range(world))) as mode:
                mesh = init_device_mesh("cpu", tuple(mesh_shape), mesh_dim_names=tuple(case["mesh"]["names"]))
                return program(Ranks(mode, world), mesh)
        finally:
            common.clear_caches()
