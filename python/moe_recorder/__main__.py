"""CLI of the MoE recorder.

    python -m moe_recorder generate --n 100 --seed 1 --out cases.jsonl [--backends spmd_types,partial_dtensor]
    python -m moe_recorder record --python VENV/bin/python --cases cases.jsonl --out outcomes.jsonl

`record` reads case/2 files (one JSON object per line, or one per file) and appends nothing: it
writes `--out` afresh. Rank logs go to `--logdir` (default: a temporary folder)."""

import argparse
import json
import os
import sys
import tempfile


def read_cases(path):
    with open(path) as f:
        text = f.read()
    text = text.strip()
    if not text:
        return []
    if text.startswith("{") and "\n{" not in text:
        return [json.loads(text)]
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _id_key(line_id):
    # "S<seed>-<n>-<backend>": numeric order of n
    parts = (line_id or "").split("-")
    try:
        return (parts[0], int(parts[1]), "-".join(parts[2:]))
    except (IndexError, ValueError):
        return (line_id or "", 0, "")


def split(paths, out_dir, prefix, max_mb):
    import json as _json
    by = {}
    for p in paths:
        with open(p) as f:
            for line in f:
                if line.strip():
                    o = _json.loads(line)
                    by.setdefault(o["case"]["subject"]["backend"], []).append((_id_key(o.get("id")), line.rstrip("\n")))
    os.makedirs(out_dir, exist_ok=True)
    limit = int(max_mb * 1024 * 1024)
    for backend, rows in sorted(by.items()):
        rows.sort(key=lambda r: r[0])
        part, size, f = 0, 0, None
        names = []
        for _, line in rows:
            if f is None or size + len(line) + 1 > limit:
                if f is not None:
                    f.close()
                part += 1
                name = os.path.join(out_dir, f"{prefix}-{backend}-{part}.jsonl")
                names.append(name)
                f = open(name, "w")
                size = 0
            f.write(line + "\n")
            size += len(line) + 1
        f.close()
        sys.stderr.write(f"{backend}: {len(rows)} outcomes in {', '.join(names)}\n")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="moe_recorder")
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--n", type=int, required=True)
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--out", required=True)
    g.add_argument("--backends", default=None, help="comma list (default: spmd_types 45%%, "
                   "partial_dtensor 40%%, full_dtensor 15%%)")
    g.add_argument("--rules", default="torch-2.14")
    g.add_argument("--revision", default="tt-0.3.0")
    g.add_argument("--reject-rate", type=float, default=0.12)
    g.add_argument("--worlds", default=None, help="e.g. 2:1,4:1 (world:weight)")
    g.add_argument("--paired", action="store_true",
                   help="each configuration under spmd_types and partial_dtensor (full_dtensor for a share), "
                        "written as {id, config_id, case} lines")
    g.add_argument("--full-dtensor-rate", type=float, default=0.35)
    g.add_argument("--focus", default=None, help="with --paired: keep only draws matching one of these "
                   "(comma list of generate.FOCUS keys: ep_lt_tp, b1_sp_tp, bf16, t1)")
    r = sub.add_parser("record")
    r.add_argument("--python", required=True, help="python of the venv with torch + torchtitan + spmd_types")
    r.add_argument("--cases", required=True, nargs="+")
    r.add_argument("--out", required=True)
    r.add_argument("--logdir", default=None)
    r.add_argument("--timeout", type=float, default=None, help="seconds per case (default 60 + 6 * world)")
    r.add_argument("--grace", type=float, default=10.0,
                   help="seconds the other ranks get after one rank has failed")
    r.add_argument("--full-locals", action="store_true",
                   help="keep every rank's local gradient even where the assembled value is recorded")
    r.add_argument("--no-debug-detail", action="store_true",
                   help="run ranks without TORCH_DISTRIBUTED_DEBUG=DETAIL (then a collective whose sizes "
                        "differ between ranks aborts gloo instead of raising a clean error)")
    sp = sub.add_parser("split", help="outcome files -> one file per backend (sorted by id), each < --max-mb")
    sp.add_argument("--out-dir", required=True)
    sp.add_argument("--prefix", default="tt-0.3.0")
    sp.add_argument("--max-mb", type=float, default=7.5)
    sp.add_argument("outcomes", nargs="+")
    a = ap.parse_args(argv)
    if a.cmd == "split":
        return split(a.outcomes, a.out_dir, a.prefix, a.max_mb)
    if a.cmd == "generate":
        from . import generate
        worlds = None
        if a.worlds:
            worlds = [(int(p.split(":")[0]), float(p.split(":")[1])) for p in a.worlds.split(",")]
        if a.paired:
            cases = generate.generate_paired(a.n, a.seed, full_dtensor_rate=a.full_dtensor_rate, rules=a.rules,
                                             focus=a.focus.split(",") if a.focus else None,
                                             revision=a.revision, reject_rate=a.reject_rate, worlds=worlds)
        else:
            cases = generate.generate(a.n, a.seed, backends=a.backends.split(",") if a.backends else None,
                                      rules=a.rules, revision=a.revision, reject_rate=a.reject_rate, worlds=worlds)
        generate.dump(cases, a.out)
        return 0
    from . import driver
    cases = []
    for p in a.cases:
        cases.extend(read_cases(p))
    logdir = a.logdir or tempfile.mkdtemp(prefix="moe-recorder-")
    os.makedirs(logdir, exist_ok=True)
    env = None if a.no_debug_detail else {"TORCH_DISTRIBUTED_DEBUG": "DETAIL"}
    with open(a.out, "w") as out:
        driver.record(cases, a.python, out, timeout=a.timeout, grace=a.grace, logdir=logdir, env=env,
                      full_locals=a.full_locals)
    sys.stderr.write(f"rank logs: {logdir}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
