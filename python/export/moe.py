# ---- running it ------------------------------------------------------------------------------------
# CASE is the case (tensors inline), MODEL what shardfuzz's model says of it, RECORDER the sources of
# shardfuzz's MoE recorder (python/moe_recorder: the plain-torch reference and the gloo rank that
# builds torchtitan's MoE module and shards it with torchtitan's own code), unpacked into a temporary
# folder at start. Needs torch; the sharded run needs torchtitan 0.3.0 and spmd_types 0.2.3.

import datetime
import json
import os
import subprocess
import sys
import tempfile


def unpack():
    """The recorder package in a temporary folder, importable as `moe_recorder`."""
    root = tempfile.mkdtemp(prefix="shardfuzz-moe-")
    pkg = os.path.join(root, "moe_recorder")
    os.makedirs(pkg)
    for name, text in RECORDER.items():
        with open(os.path.join(pkg, name), "w") as f:
            f.write(text)
    sys.path.insert(0, root)
    return root


def has_torchtitan():
    try:
        import spmd_types  # noqa: F401
        import torchtitan  # noqa: F401
        return True
    except Exception:  # noqa: BLE001
        return False


def bound(name, scale):
    """The bound shardfuzz compares an output within (relative to its largest element)."""
    if name == "tokens_per_expert":
        return 0.0
    if name == "expert_bias":
        return 1e-7
    return (4e-2 * scale + 1e-4) if CASE["dtype"] == "bf16" else (1e-2 * scale + 1e-5)


def compare(name, got, want):
    """One output against the reference: a line, and whether it agrees."""
    import torch
    from moe_recorder.rank import tensor_from_json
    a, b = tensor_from_json(got).double(), tensor_from_json(want).double()
    if a.shape != b.shape:
        return f"{name}: shape {list(a.shape)} vs the reference's {list(b.shape)}", False
    if a.numel() == 0:
        return f"{name}: empty", True
    diff = (a - b).abs().max().item()
    tol = bound(name, b.abs().max().item())
    ok = diff <= tol and diff == diff
    return f"{name}: max |sharded - reference| {diff:.3e} (bound {tol:.3e}){'' if ok else '  <-- DIFFERS'}", ok


def reference_only():
    from moe_recorder import reference
    ref = reference.compute(CASE)
    if not ref["ok"]:
        print(f"reference (plain torch) raised {ref['error']['kind']}: {ref['error']['message']}")
        return ref
    for name, t in ref["outputs"].items():
        print(f"reference {name}: shape {t['shape']} {t['dtype']}")
    return ref


def report(outcome):
    """What the real sharded layer did, against the plain-torch reference of the same case."""
    real, ref = outcome["outcome"], outcome["reference"]
    p = outcome["pytorch"]
    print(f"torch {p['torch']}, torchtitan {p['torchtitan']}, spmd_types {p['spmd_types']}; "
          f"{p['world']} gloo ranks, backend {p['backend']}")
    bad = False
    if not real["ok"]:
        e = real["error"]
        print(f"the sharded layer raised at stage {real['stage']}: {e['kind']}: {e['message']}")
        print(f"  where: {e.get('where')}")
    elif ref is None or not ref["ok"]:
        print("the sharded layer ran; the reference raised:", ref and ref["error"])
        bad = True
    else:
        print("the sharded layer ran; each output against the plain-torch reference:")
        for name, want in ref["outputs"].items():
            got = real["outputs"].get(name, {}).get("value")
            if got is None:
                continue
            line, ok = compare(name, got, want)
            bad |= not ok
            print("  " + line)
    print(f"shardfuzz's model: {', '.join(MODEL['classes']) or 'no divergence'}"
          + (f" ({'; '.join(MODEL['signatures'])})" if MODEL["signatures"] else ""))
    return bad


def rank_main():
    """One torchrun rank: the case on torchtitan's module, the report through the store to rank 0."""
    import torch
    import torch.distributed as dist
    from moe_recorder import driver, rank as rk
    torch.set_num_threads(1)
    rk._setup_torchtitan()
    r, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if world != WORLD:
        sys.exit(f"this case runs on {WORLD} ranks: torchrun --nproc-per-node {WORLD} {sys.argv[0]}")
    timeout = datetime.timedelta(seconds=TIMEOUT)
    dist.init_process_group("gloo", timeout=timeout)
    store = dist.distributed_c10d._get_default_store()

    class Lines:
        def __init__(self):
            self.done = None

        def write(self, text):
            for line in text.splitlines():
                if line.strip():
                    msg = json.loads(line)
                    if msg.get("done"):
                        self.done = msg

        def flush(self):
            pass

    out = Lines()
    rk.Worker(r, world, out).run(0, CASE)
    store.set(f"shardfuzz-report-{r}", json.dumps(out.done))
    if r != 0:
        return 0
    from importlib import metadata
    versions = {p: metadata.version(p) for p in ("torch", "torchtitan", "spmd_types")}
    reports, hung = [], False
    for k in range(world):
        try:
            store.wait([f"shardfuzz-report-{k}"], timeout)
            reports.append(json.loads(store.get(f"shardfuzz-report-{k}")))
        except Exception:  # noqa: BLE001
            hung = True
            reports.append({"ok": False, "stage": None, "rank": k, "outputs": {}, "error": {
                "kind": "Hang", "message": f"rank {k} did not report within {TIMEOUT} s"}})
    outcome = driver.build_outcome(CASE, reports, versions, hung, [])
    bad = report(outcome)
    sys.stdout.flush()
    os._exit(1 if bad else 0)  # a hung rank must not keep rank 0 waiting in the group's shutdown


def main():
    if CASE["subject"]["revision"] == "tt-head":
        # HEAD folds the batch into (T, D) tokens; the bundled recorder builds 0.3.0's (B, L, D)
        # layer, so its run and its comparison would not be this case's.
        print("a tt-head case ((T, D) tokens): this script's recorder builds torchtitan 0.3.0's (B, L, D) "
              "layer and cannot run it; replay it with `shardfuzz replay`", file=sys.stderr)
        return 2
    unpack()
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return rank_main()
    if "--reference-only" in sys.argv or not has_torchtitan():
        if "--reference-only" not in sys.argv:
            print("torchtitan (0.3.0) and spmd_types (0.2.3) are not importable: the plain-torch math only")
        reference_only()
        print(f"shardfuzz's model: {', '.join(MODEL['classes']) or 'no divergence'}")
        return 0
    # torchtitan is here: the sharded run, on WORLD gloo ranks started by torchrun.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(WORLD),
           os.path.abspath(sys.argv[0])]
    env = dict(os.environ, OMP_NUM_THREADS="1", TORCH_DISTRIBUTED_DEBUG="DETAIL")
    return subprocess.call(cmd, env=env)


if __name__ == "__main__":
    sys.exit(main())
