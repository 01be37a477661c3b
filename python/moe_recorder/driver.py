"""Runs case/2 files of kind "moe" on real gloo ranks and writes outcome/2 lines (stdlib only).

The driver starts one process per rank with the torchtitan venv's python (`moe_recorder.rank`),
keeps them alive across the cases of one world size, sends each case to every rank, waits for
every rank's report and assembles the global values (assemble.py). A rank that does not report in
time is recorded as hung (with the stage it had reached) and the group is restarted; so is a group
after any error past the config stage, since its ranks may have left collectives out of step."""

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time

from . import assemble

HERE = os.path.dirname(os.path.abspath(__file__))
PYDIR = os.path.dirname(HERE)

ORDER = ("config", "mesh", "parallelize", "forward", "backward", "hook")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class RankGroup:
    def __init__(self, world, python, env=None, logdir=None, start_timeout=180.0):
        self.world = world
        self.python = python
        port = free_port()
        penv = dict(os.environ)
        penv["PYTHONPATH"] = PYDIR + (os.pathsep + penv["PYTHONPATH"] if penv.get("PYTHONPATH") else "")
        penv.setdefault("OMP_NUM_THREADS", "1")
        penv.update(env or {})
        self.procs = []
        self.bufs = []
        self.sel = selectors.DefaultSelector()
        self.logs = []
        for r in range(world):
            log = open(os.path.join(logdir, f"rank{r}.log"), "ab") if logdir else subprocess.DEVNULL
            self.logs.append(log)
            p = subprocess.Popen(
                [python, "-m", "moe_recorder.rank", "--rank", str(r), "--world", str(world),
                 "--init", f"tcp://127.0.0.1:{port}"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=penv,
                start_new_session=True)
            os.set_blocking(p.stdout.fileno(), False)
            self.sel.register(p.stdout, selectors.EVENT_READ, r)
            self.procs.append(p)
            self.bufs.append(b"")
        self.info = {}
        ready = set()
        deadline = time.time() + start_timeout
        while len(ready) < world:
            for r, msg in self._read(deadline):
                if msg.get("ready"):
                    ready.add(r)
                    self.info = msg
            if time.time() > deadline:
                self.kill()
                raise RuntimeError(f"rank processes did not start within {start_timeout} s")
            if any(p.poll() is not None for p in self.procs):
                self.kill()
                raise RuntimeError("a rank process exited during start-up (see its log)")

    def _read(self, deadline):
        timeout = max(0.0, min(1.0, deadline - time.time()))
        out = []
        for key, _ in self.sel.select(timeout):
            r = key.data
            try:
                chunk = os.read(key.fileobj.fileno(), 1 << 20)
            except BlockingIOError:
                continue
            if not chunk:
                self.sel.unregister(key.fileobj)
                continue
            self.bufs[r] += chunk
            while b"\n" in self.bufs[r]:
                line, self.bufs[r] = self.bufs[r].split(b"\n", 1)
                line = line.strip()
                if line:
                    try:
                        out.append((r, json.loads(line)))
                    except ValueError:
                        pass
        return out

    def run(self, cid, case, timeout, grace):
        msg = (json.dumps({"id": cid, "case": case}) + "\n").encode()
        for p in self.procs:
            p.stdin.write(msg)
            p.stdin.flush()
        done = {}
        stage = {r: None for r in range(self.world)}
        start = time.time()
        deadline = start + timeout
        first_err = None
        while len(done) < self.world:
            now = time.time()
            limit = deadline if first_err is None else min(deadline, first_err + grace)
            if now > limit:
                break
            for r, m in self._read(limit):
                if m.get("id") != cid:
                    continue
                if m.get("progress"):
                    stage[r] = m["progress"]
                if m.get("done"):
                    done[r] = m
                    if not m.get("ok") and first_err is None:
                        first_err = time.time()
            if any(p.poll() is not None for p in self.procs):
                # a rank died (gloo aborts the process on some mismatches); the others are stuck
                time.sleep(0.5)
                for r, m in self._read(time.time() + 0.5):
                    if m.get("id") == cid and m.get("done"):
                        done[r] = m
                dead = [r for r, p in enumerate(self.procs) if p.poll() is not None]
                break
        hung = [r for r in range(self.world) if r not in done]
        dead = [r for r, p in enumerate(self.procs) if p.poll() is not None]
        stacks = self._stacks([r for r in hung if self.procs[r].poll() is None])
        for r in hung:
            p = self.procs[r]
            died = p.poll() is not None
            done[r] = {"ok": False, "stage": stage[r] or "config", "rank": r, "id": cid, "outputs": {},
                       "layouts": {}, "types": {}, "comms": [], "notes": [],
                       "error": {"kind": "Died" if died else "Hang",
                                 "message": (f"rank {r} exited (code {p.returncode}) during stage {stage[r]}" if died else
                                             f"rank {r} did not finish stage {stage[r]}: still waiting when "
                                             f"rank {dead[0]} died" if dead else
                                             f"rank {r} did not finish stage {stage[r]} within "
                                             f"{round(time.time() - start, 1)} s"),
                                 "where": stacks.get(r)}}
        return [done[r] for r in range(self.world)], bool(hung)

    def _stacks(self, ranks):
        """Where each hung rank is (faulthandler on SIGUSR1, written to the rank's log): its innermost
        torchtitan frame and the torch/spmd_types call made from it."""
        out = {}
        if not ranks or not self.logs or self.logs[0] is subprocess.DEVNULL:
            return out
        sizes = {}
        for r in ranks:
            try:
                self.logs[r].flush()
                sizes[r] = os.path.getsize(self.logs[r].name)
                os.kill(self.procs[r].pid, signal.SIGUSR1)
            except Exception:  # noqa: BLE001
                pass
        time.sleep(1.5)
        for r in sizes:
            try:
                with open(self.logs[r].name, "rb") as f:
                    f.seek(sizes[r])
                    text = f.read().decode(errors="replace")
            except Exception:  # noqa: BLE001
                continue
            frames = []
            for line in text.splitlines():
                line = line.strip()
                if line.startswith('File "') and "site-packages/" in line:
                    path = line.split('"')[1].split("site-packages/")[1]
                    rest = line.split('"', 2)[2]
                    try:
                        lineno = rest.split("line ")[1].split(" ")[0]
                        fn = rest.split(" in ")[1]
                    except IndexError:
                        continue
                    if path.startswith(("torchtitan/", "spmd_types/", "torch/")):
                        frames.append(f"{path}:{lineno} {fn}")
            # faulthandler lists the most recent call first. Keep what does not depend on when the
            # dump arrived: the innermost torchtitan frame and the library call it is in.
            tt = [i for i, f in enumerate(frames) if f.startswith("torchtitan/")]
            if tt:
                i = tt[0]
                out[r] = frames[i] + (" -> " + frames[i - 1] if i > 0 else "")
            elif frames:
                out[r] = frames[-1]
        return out

    def close(self):
        for p in self.procs:
            try:
                p.stdin.write(b'{"quit": true}\n')
                p.stdin.flush()
            except Exception:  # noqa: BLE001
                pass
        t = time.time() + 10
        for p in self.procs:
            try:
                p.wait(max(0.1, t - time.time()))
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except Exception:  # noqa: BLE001
                    p.kill()
        for p in self.procs:
            try:
                p.wait(5)
            except Exception:  # noqa: BLE001
                pass
        for log in self.logs:
            if log is not subprocess.DEVNULL:
                log.close()
        self.sel.close()


def world_of(case):
    w = 1
    for s in case["mesh"]["shape"]:
        w *= int(s)
    return w


def mesh_dims(case):
    dp, cp, tp = (int(s) for s in case["mesh"]["shape"])
    par = case["subject"]["parallel"]
    dpr = int(par.get("dp_replicate", 1))
    ep = int(par.get("ep", 1))
    dps = dp // dpr if dpr else dp
    efsdp = (dps * cp * tp) // ep if ep else 0
    return {"dp": dp, "cp": cp, "tp": tp, "dp_replicate": dpr, "efsdp": efsdp, "ep": ep, "dp_shard": dps}


def _where(tb):
    """Innermost frame of a traceback inside torch, torchtitan or spmd_types, as 'pkg/file.py:line fn'."""
    if not tb:
        return None
    best = None
    lines = tb.splitlines()
    for i, line in enumerate(lines):
        line = line.strip()
        if line.startswith('File "') and "site-packages/" in line:
            path = line.split('"')[1].split("site-packages/")[1]
            try:
                lineno = line.split(", line ")[1].split(",")[0]
                fn = line.split(", in ")[1]
            except IndexError:
                continue
            if path.startswith(("torchtitan/", "spmd_types/", "torch/")):
                best = f"{path}:{lineno} {fn}"
        elif line.startswith("trainer.py"):
            best = "torchtitan/trainer.py (seq_len check, replayed)"
    return best


GRAD_NAMES = ("x_grad",)


def build_outcome(case, reports, versions, hung, engine_notes, full_locals=False):
    dims = mesh_dims(case)
    ok = all(r.get("ok") for r in reports)
    real = {"ok": ok, "stage": None, "error": None, "rank_errors": None, "outputs": {}, "comms": None}
    if not ok:
        errs = []
        for r in reports:
            if r.get("ok"):
                errs.append(None)
                continue
            e = r.get("error") or {}
            full = e.get("full") or ""
            rest = "\n".join(full.splitlines()[1:])[:600]
            errs.append({"stage": r.get("stage"), "kind": e.get("kind"), "message": normalize(e.get("message")),
                         "detail": normalize(rest) or None, "where": e.get("where") or _where(e.get("traceback"))})
        # the case's error: the earliest stage any rank failed in; a real raise beats a hang
        failing = [e for e in errs if e is not None]
        raised = [e for e in failing if e["kind"] not in ("Hang", "Died")] or failing
        first = min(raised, key=lambda e: ORDER.index(e["stage"]) if e["stage"] in ORDER else 99)
        real["stage"] = first["stage"]
        real["error"] = {"kind": first["kind"], "message": first["message"], "where": first["where"]}
        real["rank_errors"] = errs
    # outputs: every name any rank reported
    names = []
    for r in reports:
        for n in r.get("outputs", {}):
            if n not in names:
                names.append(n)
    layouts = {}
    for r in reports:
        layouts.update(r.get("layouts") or {})
    for n in names:
        locs = [r.get("outputs", {}).get(n) for r in reports]
        entry = {"locals": locs, "value": None}
        big = n.startswith("grad.") or n in ("y", "x_grad")
        lay = layouts.get(n)
        if n.startswith("router.") or n == "tokens_per_expert_after_hook":
            lay = None
        if n == "tokens_per_expert":
            lay = layouts.get("tokens_per_expert")
        if lay is not None:
            entry["layout"] = lay
            if all(l is not None for l in locs) and n != "x":
                try:
                    val, notes = assemble.assemble(lay, locs, dims, grad=n.startswith("grad.") or n in GRAD_NAMES)
                    entry["value"] = val
                    if notes:
                        entry["replicas_differ"] = notes
                except Exception as e:  # noqa: BLE001
                    entry["assemble_error"] = str(e)
        if big and not full_locals and entry.get("value") is not None and not entry.get("replicas_differ"):
            entry["locals"] = None  # omitted to keep recordings small: value + layout say it all
            entry["locals_shapes"] = [l["shape"] if l else None for l in locs]
        types = [(r.get("types") or {}).get(n) for r in reports]
        if any(t is not None for t in types):
            entry["types"] = types[0] if all(t == types[0] for t in types) else types
        real["outputs"][n] = entry
    ptypes = {}
    for r in reports:
        for k, v in (r.get("types") or {}).items():
            if k.startswith("param.") or k.endswith("_E"):
                ptypes.setdefault(k, []).append(v)
    if ptypes:
        # one entry when every rank agrees, else the per-rank list
        real["state_types"] = {k: (v[0] if all(x == v[0] for x in v) else v) for k, v in ptypes.items()}
    # the parallelize phase (DTensor's scatter/broadcast of the states) is counted, not listed
    real["comms"] = [[c for c in (r.get("comms") or []) if c.get("phase") != "parallelize"] for r in reports]
    n_par = [sum(1 for c in (r.get("comms") or []) if c.get("phase") == "parallelize") for r in reports]
    if any(n_par):
        real["parallelize_comms"] = n_par
    notes = list(engine_notes)
    for r in reports:
        for nt in r.get("notes") or []:
            notes.append(f"rank {r.get('rank')}: {nt}")
    pyt = {"torch": versions.get("torch"), "torchtitan": versions.get("torchtitan"),
           "spmd_types": versions.get("spmd_types"), "backend": case["subject"].get("backend"),
           "engine": "gloo", "world": len(reports), "notes": notes}
    if hung:
        pyt["restarted"] = True
    ref = next((r.get("reference") for r in reports if r.get("reference") is not None), None)
    return {"format": "shardfuzz.outcome/2", "case": case, "outcome": real, "reference": ref, "pytorch": pyt}


def normalize(msg):
    """Error texts without what changes from run to run (ports, elapsed seconds), so that a
    recording regenerated from the same seed is the same file."""
    import re
    if not msg:
        return msg
    msg = re.sub(r"\[127\.0\.0\.1\]:\d+", "[127.0.0.1]:PORT", msg)
    msg = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", msg)
    msg = re.sub(r"within \d+(\.\d+)? s", "within the timeout", msg)
    msg = re.sub(r"\b\d+(\.\d+)?(ms| ms)\b", "N ms", msg)
    return msg


def record(cases, python, out, timeout=None, grace=10.0, logdir=None, env=None, progress=True,
           full_locals=False):
    """Run every case; write one outcome line per case to `out` (a file object)."""
    metas = [{k: c[k] for k in ("id", "config_id") if k in c} if "case" in c else {} for c in cases]
    cases = [c["case"] if "case" in c else c for c in cases]
    order = sorted(range(len(cases)), key=lambda i: world_of(cases[i]))
    group = None
    n_done = 0
    t0 = time.time()
    for i in order:
        case = cases[i]
        w = world_of(case)
        if group is not None and group.world != w:
            group.close()
            group = None
        notes = ["TORCH_DISTRIBUTED_DEBUG=" + env["TORCH_DISTRIBUTED_DEBUG"]] if env and env.get(
            "TORCH_DISTRIBUTED_DEBUG") else []
        if group is None:
            try:
                group = RankGroup(w, python, env=env, logdir=logdir)
            except RuntimeError as e:
                out.write(json.dumps({**metas[i], **error_outcome(case, "Startup", str(e))}) + "\n")
                out.flush()
                continue
        tmo = timeout or (60.0 + 6.0 * w)
        reports, hung = group.run(i, case, tmo, grace)
        versions = group.info
        outcome = build_outcome(case, reports, versions, hung, notes, full_locals=full_locals)
        outcome = {**metas[i], **outcome}
        out.write(json.dumps(outcome, separators=(",", ":")) + "\n")
        out.flush()
        n_done += 1
        if progress:
            e = outcome["outcome"]["error"]
            sys.stderr.write(f"[{n_done}/{len(cases)} {time.time() - t0:.0f}s] world {w} "
                             f"{case['subject']['backend']} ep={case['subject']['parallel'].get('ep')} "
                             f"sp={case['subject']['parallel'].get('sp')} -> "
                             f"{'ok' if outcome['outcome']['ok'] else e['kind'] + '@' + str(outcome['outcome']['stage']) + ': ' + str(e['message'])[:100]}\n")
        bad_stage = outcome["outcome"]["stage"] not in (None, "config")
        if hung or bad_stage:
            group.kill()
            group = None
    if group is not None:
        group.close()


def error_outcome(case, kind, message):
    return {"format": "shardfuzz.outcome/2", "case": case, "reference": None,
            "outcome": {"ok": False, "stage": "startup", "error": {"kind": kind, "message": message},
                     "outputs": {}, "comms": None},
            "pytorch": {"engine": "gloo", "notes": ["the rank processes could not be started"]}}
