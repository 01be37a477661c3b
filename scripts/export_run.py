"""Runs exported scripts (`shardfuzz export`) many at a time in one venv, importing torch once:
each script runs in a process forked from this one, first as `python OUT.py` would (one process,
LocalTensorMode), then as `torchrun --nproc-per-node N OUT.py` would (one forked process per rank
with torchrun's environment: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT; the script's
gloo path is the same). Prints one TSV line per script and engine: path, engine, pass|FAIL, why.
A script passes when it exits 0 and prints the verdict classes the model embedded in it.
Usage: python export_run.py OUT.py...   (used by scripts/export-check --fork)"""

import io
import os
import re
import runpy
import socket
import sys

import torch  # noqa: F401  (imported once, before the forks)
import torch.distributed  # noqa: F401

LIMIT_S = 300


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child(script, env, out_fd):
    """In a forked process: run the script as __main__ with its stdout going to out_fd."""
    os.environ.update(env)
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", 0), write_through=True)
    sys.stderr = sys.stdout
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001 (the script's failure is the result)
        import traceback
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    os._exit(code)


def spawn(script, env):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        child(script, env, w)
    os.close(w)
    return pid, r


def collect(procs):
    """Waits for forked processes; returns (exit codes, output of the first)."""
    outs = []
    for _, r in procs:
        chunks = []
        while True:
            b = os.read(r, 65536)
            if not b:
                break
            chunks.append(b)
        os.close(r)
        outs.append(b"".join(chunks).decode(errors="replace"))
    codes = []
    for pid, _ in procs:
        _, status = os.waitpid(pid, 0)
        codes.append(os.waitstatus_to_exitcode(status))
    return codes, outs[0]


def verdict(out, codes):
    if any(codes):
        tail = [l for l in out.splitlines() if l.strip()][-1:] or ["?"]
        return "FAIL", f"exit {codes}: {tail[0][:200]}"
    got = re.search(r"^verdict classes: (.*)$", out, re.M)
    want = re.search(r"^shardfuzz's model: (.*)$", out, re.M)
    if got and want and got.group(1) == want.group(1):
        return "pass", got.group(1)
    return "FAIL", f"real {got.group(1) if got else '?'}, model {want.group(1) if want else '?'}"


def world(script):
    m = re.search(r"^MESH_SHAPE, MESH_NAMES, WORLD = .*, (\d+)$", open(script).read(), re.M)
    return int(m.group(1))


def main(scripts):
    for s in scripts:
        codes, out = collect([spawn(s, {})])
        print(s, "local", *verdict(out, codes), sep="\t", flush=True)
        n, port = world(s), str(free_port())
        procs = [spawn(s, {"RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(n), "LOCAL_WORLD_SIZE": str(n),
                           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}) for r in range(n)]
        codes, out = collect(procs)
        print(s, "gloo", *verdict(out, codes), sep="\t", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
