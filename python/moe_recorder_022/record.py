"""Record torchtitan 0.2.2 MoE outcomes on 2 gloo CPU ranks (replayed against the model's tt-0.2.2 by the moe crate's tests/replay.rs; docs/moe-revisions.md, "torchtitan 0.2.x").

Run: ~/.cache/shardfuzz/venv-torchtitan-0.2.2-torch-2.14.0/bin/python python/moe_recorder_022/record.py OUT.jsonl
The layer and its runs are in core.py (shared with the confirm entry, __main__.py). Uses the package's own apply_moe_ep_tp (llama4 parallelize) with tp=2, ep in {1, 2} (ep borrows tp),
sequence-parallel input Shard(1) as 0.2.2's plan demands. Two CPU shims (both stated in each record):
  * torch.histc on integer ids -> histc of the float copy, cast back (CUDA behaviour; CPU has no Long histc)
  * generate_permute_indices(use_cpu=True) (the package's own CPU path; default is a Triton kernel)
"""
import json
import os
import random
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from moe_recorder_022.core import NOTES, cat_seq, reference, sharded, tj  # noqa: E402  (installs the shims)


def rnd(g, shape, scale=1.0):
    return (torch.randn(shape, generator=g) * scale).to(torch.float32)


def make_case(i, seed):
    r = random.Random(seed)
    B, L, D, H = r.choice([1, 2]), r.choice([2, 4]), 8, 16
    if os.environ.get("LFORCE"):
        L = int(os.environ["LFORCE"])
    E = r.choice([2, 4])
    K = r.choice([1, 2]) if E > 1 else 1
    ep = r.choice([1, 2])
    sbe = os.environ.get("SBE", "0") == "1"
    g = torch.Generator().manual_seed(seed)
    t = {"x": rnd(g, (B, L, D)), "gate": rnd(g, (E, D), 0.5), "w1": rnd(g, (E, H, D), 0.3),
         "w2": rnd(g, (E, D, H), 0.3), "w3": rnd(g, (E, H, D), 0.3),
         "expert_bias": torch.zeros(E), "grad_y": rnd(g, (B, L, D))}
    router = {"score_func": r.choice(["softmax", "sigmoid"]), "route_norm": r.choice([True, False]),
              "route_scale": 1.0, "groups": None, "force_load_balance": False,
              "score_before_experts": sbe}
    case = {"format": "shardfuzz.case/2", "mesh": {"shape": [1, 1, 2], "names": ["dp", "cp", "tp"]},
            "rules": "torch-2.14", "dtype": "f32", "device": "cpu",
            "data": {"seed": seed, "style": "normal", "tensors": {k: tj(v) for k, v in t.items()}},
            "subject": {"kind": "moe", "revision": "tt-0.2.2", "backend": "dtensor_hooks",
                        "parallel": {"dp_replicate": 1, "ep": ep, "sp": True},
                        "dims": {"batch": B, "seq": L, "model": D, "hidden": H, "experts": E, "top_k": K,
                                 "shared_hidden": None},
                        # The layer is sharded by apply_moe_ep_tp directly, without
                        # parallelize_llama's assertion (L divisible by tp * 2 * cp): direct
                        # module use, which the case says with trainer_checks false.
                        "router": router, "load_balance_coeff": 0.001, "backward": True,
                        "trainer_checks": False}}
    return case, t


def worker(rank, world, cases, out, port):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    res = []
    for case, t in cases:
        res.append(sharded(rank, case, t))
        dist.barrier()
    torch.save(res, f"{out}.rank{rank}")
    dist.destroy_process_group()


SB = ("sbe-" if os.environ.get("SBE", "0") == "1" else "") + ("L%s-" % os.environ["LFORCE"] if os.environ.get("LFORCE") else "")


def main():
    out = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    cases = [make_case(i, 1000 + i) for i in range(n)]
    mp.spawn(worker, args=(2, cases, out, 29611), nprocs=2, join=True)
    r0, r1 = torch.load(f"{out}.rank0"), torch.load(f"{out}.rank1")
    with open(out, "w") as f:
        for i, ((case, t), a, b) in enumerate(zip(cases, r0, r1)):
            oc = {"ok": a["ok"] and b["ok"], "stage": a.get("stage") or b.get("stage"),
                  "error": a.get("error") or b.get("error"), "rank_errors": None if a["ok"] and b["ok"] else
                  [a.get("error"), b.get("error")], "outputs": {}}
            if oc["ok"]:
                oc["outputs"]["y"] = {"locals": [a["locals"]["y"], b["locals"]["y"]],
                                      "value": cat_seq([a["locals"]["y"], b["locals"]["y"]])}
                oc["outputs"]["x_grad"] = {"locals": [a["locals"]["x_grad"], b["locals"]["x_grad"]],
                                           "value": cat_seq([a["locals"]["x_grad"], b["locals"]["x_grad"]])}
                for k in a["outputs"]:
                    oc["outputs"][k] = {"locals": [a["outputs"][k], b["outputs"][k]], "value": a["outputs"][k]}
            else:
                oc["tb"] = a.get("tb") or b.get("tb")
            rec = {"id": f"G022-{SB}{i}-dtensor_hooks", "config_id": f"G022-{SB}{i}", "format": "shardfuzz.outcome/2",
                   "case": case, "outcome": oc, "reference": reference(case, t),
                   "pytorch": {"torch": torch.__version__.split("+")[0], "torchtitan": "0.2.2",
                               "backend": "dtensor_hooks", "engine": "gloo", "world": 2, "notes": NOTES}}
            f.write(json.dumps(rec) + "\n")
    for r in ("rank0", "rank1"):
        os.remove(f"{out}.{r}")


if __name__ == "__main__":
    main()
