//! The real-PyTorch worker process: `python -m shardfuzz_worker` (the package in `python/` of
//! this repository, built into the binary and unpacked into the cache directory) in its own
//! process group, one case per JSON line in, one outcome per line out. A case that crashes the
//! worker or runs past its time limit is lost alone: the worker (and its gloo rank processes) is
//! killed, and the next case starts a new one.

use serde_json::Value;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The worker package's files, as built into this binary.
pub const PACKAGE: &[(&str, &str)] = &[
    ("__init__.py", include_str!("../../../python/shardfuzz_worker/__init__.py")),
    ("__main__.py", include_str!("../../../python/shardfuzz_worker/__main__.py")),
    ("common.py", include_str!("../../../python/shardfuzz_worker/common.py")),
    ("commlog.py", include_str!("../../../python/shardfuzz_worker/commlog.py")),
    ("router.py", include_str!("../../../python/shardfuzz_worker/router.py")),
    ("forward.py", include_str!("../../../python/shardfuzz_worker/forward.py")),
    ("boundary.py", include_str!("../../../python/shardfuzz_worker/boundary.py")),
    ("local_engine.py", include_str!("../../../python/shardfuzz_worker/local_engine.py")),
    ("gloo_engine.py", include_str!("../../../python/shardfuzz_worker/gloo_engine.py")),
    ("serve.py", include_str!("../../../python/shardfuzz_worker/serve.py")),
];

/// How long a new worker may take to import torch and say it is ready.
const START_LIMIT: Duration = Duration::from_secs(180);

/// Why a request got no outcome.
#[derive(Clone, Debug, PartialEq)]
pub enum Failure {
    /// The worker did not start (no interpreter, an import error).
    Start(String),
    /// The case ran past its limit; the worker was killed.
    Timeout(Duration),
    /// The worker died on the case (its last stderr lines).
    Crash(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Start(m) => write!(f, "the PyTorch worker did not start: {m}"),
            Failure::Timeout(d) => write!(f, "timed out after {} s (the worker was killed)", d.as_secs()),
            Failure::Crash(m) => write!(f, "the PyTorch worker died on this case: {m}"),
        }
    }
}

/// The directory holding the unpacked `shardfuzz_worker` package (written once per content).
pub fn package_dir() -> std::io::Result<PathBuf> {
    let mut all = Vec::new();
    for (name, text) in PACKAGE {
        all.extend_from_slice(name.as_bytes());
        all.extend_from_slice(text.as_bytes());
    }
    let dir = super::venv::cache_dir().join(format!("worker-{:016x}", harness::hash64(&all)));
    let pkg = dir.join("shardfuzz_worker");
    if !pkg.join("serve.py").exists() {
        let tmp = dir.with_extension(format!("tmp{}", std::process::id()));
        std::fs::create_dir_all(tmp.join("shardfuzz_worker"))?;
        for (name, text) in PACKAGE {
            std::fs::write(tmp.join("shardfuzz_worker").join(name), text)?;
        }
        // Another process may have won the race: its copy is identical.
        if std::fs::rename(&tmp, &dir).is_err() {
            std::fs::remove_dir_all(&tmp).ok();
        }
    }
    Ok(dir)
}

pub struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<Option<String>>,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

impl Worker {
    /// Starts `python -m shardfuzz_worker` and waits for its ready line.
    pub fn start(python: &Path) -> Result<Worker, Failure> {
        let pkg = package_dir().map_err(|e| Failure::Start(format!("cannot unpack the worker package: {e}")))?;
        let mut child = Command::new(python)
            .args(["-m", "shardfuzz_worker"])
            .env("PYTHONPATH", &pkg)
            .env("OMP_NUM_THREADS", "1")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| Failure::Start(format!("{}: {e}", python.display())))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let (tx, lines) = channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(Some(line)).is_err() {
                    return;
                }
            }
            tx.send(None).ok();
        });
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let tail = stderr.clone();
        let err = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut t = tail.lock().expect("stderr tail");
                t.push_back(line);
                if t.len() > 20 {
                    t.pop_front();
                }
            }
        });
        let mut w = Worker { child, stdin, lines, stderr };
        match w.next_line(START_LIMIT) {
            Ok(l) if l.contains("\"ready\"") => Ok(w),
            Ok(l) => Err(Failure::Start(format!("unexpected first line: {l}"))),
            Err(Failure::Crash(m)) => Err(Failure::Start(m)),
            Err(e) => Err(Failure::Start(e.to_string())),
        }
    }

    fn next_line(&mut self, limit: Duration) -> Result<String, Failure> {
        match self.lines.recv_timeout(limit) {
            Ok(Some(line)) => Ok(line),
            Ok(None) | Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                std::thread::sleep(Duration::from_millis(50)); // the stderr thread's last lines
                let tail: Vec<String> = self.stderr.lock().expect("stderr tail").iter().cloned().collect();
                let tail = tail.iter().rev().take(3).rev().cloned().collect::<Vec<_>>().join(" | ");
                Err(Failure::Crash(format!("{status}: {tail}")))
            }
            Err(RecvTimeoutError::Timeout) => {
                self.kill();
                Err(Failure::Timeout(limit))
            }
        }
    }

    /// Sends one request; its reply, or why there is none (the worker is then dead).
    pub fn request(&mut self, req: &Value, limit: Duration) -> Result<Value, Failure> {
        let line = req.to_string() + "\n";
        if self.stdin.write_all(line.as_bytes()).and_then(|_| self.stdin.flush()).is_err() {
            return Err(self.next_line(Duration::from_secs(5)).err().unwrap_or(Failure::Crash("stdin closed".into())));
        }
        let reply = self.next_line(limit)?;
        serde_json::from_str(&reply).map_err(|e| Failure::Crash(format!("unreadable reply ({e}): {reply:.200}")))
    }

    /// Kills the worker and every process of its group (gloo ranks included).
    pub fn kill(&mut self) {
        // SAFETY: signalling our own child's process group.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        self.child.kill().ok();
        self.child.wait().ok();
    }

    /// Still running (not crashed or killed).
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}
