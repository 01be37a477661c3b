# ---- running it ------------------------------------------------------------------------------------
# CASE is a tt-0.2.2 case (tensors inline), MODEL what shardfuzz's model says of it, RECORDER_022 the
# sources of shardfuzz's torchtitan 0.2.2 recorder (python/moe_recorder_022: torchtitan 0.2.2's MoE
# module built from the case, run on one rank and sharded by the package's own apply_moe_ep_tp on gloo
# CPU ranks, with two CPU shims: integer histc, the package's CPU permute path), RECORDER the
# plain-torch math of the layer (python/moe_recorder/reference.py, honouring score_before_experts).
# Both are unpacked into a temporary folder at start (removed at exit). Needs torch; the real run needs torchtitan 0.2.2.

import atexit
import json
import os
import shutil
import sys
import tempfile


def scratch(prefix):
    """A temporary folder, removed when the script exits."""
    d = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, d, True)
    return d


def unpack():
    """The two packages in a temporary folder, importable as `moe_recorder` and `moe_recorder_022`."""
    root = scratch("shardfuzz-moe-022-")
    for pkg, files in (("moe_recorder", RECORDER), ("moe_recorder_022", RECORDER_022)):
        os.makedirs(os.path.join(root, pkg))
        for name, text in files.items():
            with open(os.path.join(root, pkg, name), "w") as f:
                f.write(text)
    sys.path.insert(0, root)
    return root


def has_torchtitan_022():
    try:
        from importlib import metadata
        return metadata.version("torchtitan") == "0.2.2"
    except Exception:  # noqa: BLE001
        return False


def not_runnable():
    """Why the 0.2.2 recorder does not run this case on ranks (None: it does)."""
    dp, cp, tp = CASE["mesh"]["shape"]
    s = CASE["subject"]
    ep, seq = s["parallel"]["ep"], s["dims"]["seq"]
    if dp != 1 or cp != 1:
        return f"the 0.2.2 recorder runs a tp-only mesh (dp = cp = 1), found dp = {dp}, cp = {cp}"
    if ep not in (1, tp):
        return f"the 0.2.2 recorder runs ep = 1 or ep = tp, found ep = {ep}, tp = {tp}"
    if CASE["dtype"] != "f32":
        return f"the 0.2.2 recorder runs float32 only, found {CASE['dtype']}"
    if seq % tp:
        return f"an uneven sequence (seq {seq} not divisible by tp {tp}) aborts the gloo ranks of the 0.2.2 layer"
    return None


def bound(name, scale):
    """The float32 bound shardfuzz compares an output within (relative to its largest element)."""
    if name == "tokens_per_expert":
        return 0.0
    return 1e-2 * scale + 1e-5


def noise_only(name):
    """grad.gate with route_norm and top_k 1: the normalised score is 1, its gradient rounding noise."""
    r, k = CASE["subject"]["router"], CASE["subject"]["dims"]["top_k"]
    return name == "grad.gate" and r["route_norm"] and k == 1


def compare(name, got, want):
    """One output against the one-rank module: a line, and whether it agrees."""
    from moe_recorder.rank import tensor_from_json
    a, b = tensor_from_json(got).double(), tensor_from_json(want).double()
    if a.shape != b.shape:
        return f"{name}: shape {list(a.shape)} vs the one-rank module's {list(b.shape)}", False
    if a.numel() == 0:
        return f"{name}: empty", True
    diff = (a - b).abs().max().item()
    tol = bound(name, b.abs().max().item())
    ok = (diff <= tol and diff == diff) or noise_only(name)
    mark = "" if diff <= tol else ("  (rounding noise only: route_norm, top_k 1)" if ok else "  <-- DIFFERS")
    return f"{name}: max |sharded - one rank| {diff:.3e} (bound {tol:.3e}){mark}", ok


def model_line():
    return (f"shardfuzz's model: {', '.join(MODEL['classes']) or 'no divergence'}"
            + (f" ({'; '.join(MODEL['signatures'])})" if MODEL["signatures"] else ""))


def reference_only():
    from moe_recorder import reference
    ref = reference.compute(CASE)
    if not ref["ok"]:
        print(f"reference (plain torch) raised {ref['error']['kind']}: {ref['error']['message']}")
    else:
        sbe = CASE["subject"]["router"].get("score_before_experts", False)
        print(f"plain-torch math of the layer (score_before_experts={sbe}):")
        for name, t in ref["outputs"].items():
            print(f"reference {name}: shape {t['shape']} {t['dtype']}")
    print(model_line())
    return 0


def sharded():
    """The case on WORLD gloo ranks of torchtitan 0.2.2's module, against its one-rank run."""
    import torch
    from moe_recorder_022.confirm import assemble, run_world
    out = os.path.join(scratch("shardfuzz-moe-022-run-"), "outcome")
    per_rank, note = run_world(WORLD, [("c0", CASE)], out, TIMEOUT)
    results = [got.get("c0") for got in per_rank]
    if any(r is None for r in results):
        print(f"the ranks did not finish the case: {note or 'no result'}")
        return 1
    line = assemble("c0", CASE, results, WORLD)
    real, ref = line["outcome"], line["reference"]
    print(f"torch {torch.__version__.split('+')[0]}, torchtitan 0.2.2; {WORLD} gloo ranks, "
          f"sharded by apply_moe_ep_tp; shims: {'; '.join(line['pytorch']['notes'][:2])}")
    bad = False
    if not real["ok"]:
        e = real["error"]
        print(f"the sharded layer raised at stage {real['stage']}: {e['kind']}: {e['message']}")
    elif not ref["ok"]:
        print(f"the sharded layer ran; the one-rank module raised {ref['error']}")
        bad = True
    else:
        print("the sharded layer ran; each output against the same module run on one rank:")
        for name, want in ref["outputs"].items():
            got = real["outputs"].get(name, {}).get("value")
            if got is None:
                continue
            text, ok = compare(name, got, want)
            bad |= not ok
            print("  " + text)
    print(model_line())
    return 1 if bad else 0


def main():
    unpack()
    if "--reference-only" in sys.argv:
        return reference_only()
    if not has_torchtitan_022():
        print("torchtitan 0.2.2 is not importable: the plain-torch math only")
        return reference_only()
    why = not_runnable()
    if why:
        print(f"not run on ranks: {why}; the plain-torch math only")
        return reference_only()
    return sharded()


if __name__ == "__main__":
    sys.exit(main())
