//! The worker processes of a campaign: spawning them (each in its own process group, so a
//! terminal Ctrl-C reaches only the coordinator), queueing jobs, reading replies, enforcing the
//! per-job time limit, and replacing a worker that died, with a typed account of how it died.

use crate::worker::{Job, Reply, Setup};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

/// What a queued job is, as the coordinator tracks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    Run(u64),
    Shrink,
}

/// How a worker stopped answering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Death {
    /// Killed by the coordinator after its job ran past the time limit.
    Timeout,
    /// Killed by a signal (an abort, a segfault).
    Signal(i32),
    /// Exited with this status.
    Exit(i32),
    /// Its output closed and no status could be read.
    Unknown,
}

impl Death {
    fn of(status: Option<ExitStatus>) -> Death {
        match status {
            Some(s) => match (s.signal(), s.code()) {
                (Some(sig), _) => Death::Signal(sig),
                (None, Some(code)) => Death::Exit(code),
                _ => Death::Unknown,
            },
            None => Death::Unknown,
        }
    }
}

/// Something a worker did.
pub enum Event {
    /// A reply to `job` (None only for the ready signal).
    Reply { job: Option<Work>, reply: Reply },
    /// The worker died running `job` (None when it died idle); it has been replaced, and the
    /// jobs queued behind `job` were handed to its replacement.
    Died { job: Option<Work>, death: Death },
}

enum Msg {
    Line(Reply),
    Gone,
}

struct Proc {
    child: Child,
    stdin: ChildStdin,
    generation: u64,
    /// Jobs sent and not answered, oldest (the one running) first, with the time it started.
    jobs: VecDeque<(Work, Job, Instant)>,
    /// The worker has loaded libtorch; time limits apply from then on.
    ready: bool,
}

/// Jobs queued per worker, so that it never waits for the coordinator between cases.
pub const DEPTH: usize = 4;

pub struct Pool {
    procs: Vec<Proc>,
    tx: Sender<(usize, u64, Msg)>,
    rx: Receiver<(usize, u64, Msg)>,
    exe: PathBuf,
    setup_line: String,
    /// Time limit per job kind.
    run_limit: Duration,
    shrink_limit: Duration,
}

impl Pool {
    pub fn start(
        exe: PathBuf,
        setup: &Setup,
        n: usize,
        run_limit: Duration,
        shrink_limit: Duration,
    ) -> anyhow::Result<Pool> {
        let (tx, rx) = channel();
        let setup_line = serde_json::to_string(setup)? + "\n";
        let mut pool = Pool { procs: Vec::new(), tx, rx, exe, setup_line, run_limit, shrink_limit };
        for id in 0..n {
            let p = pool.spawn(id, 0)?;
            pool.procs.push(p);
        }
        Ok(pool)
    }

    fn spawn(&self, id: usize, generation: u64) -> anyhow::Result<Proc> {
        let mut child = Command::new(&self.exe)
            .arg("worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start a worker ({}): {e}", self.exe.display()))?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        // A worker that cannot read its setup dies at once; the pool sees it as a death.
        stdin.write_all(self.setup_line.as_bytes()).and_then(|_| stdin.flush()).ok();
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let reply = serde_json::from_str::<Reply>(&line)
                    .unwrap_or_else(|e| Reply::Failed { message: format!("unreadable reply: {e}") });
                if tx.send((id, generation, Msg::Line(reply))).is_err() {
                    return;
                }
            }
            tx.send((id, generation, Msg::Gone)).ok();
        });
        Ok(Proc { child, stdin, generation, jobs: VecDeque::new(), ready: false })
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    /// Jobs queued on worker `w`.
    pub fn queued(&self, w: usize) -> usize {
        self.procs[w].jobs.len()
    }

    pub fn all_idle(&self) -> bool {
        self.procs.iter().all(|p| p.jobs.is_empty())
    }

    pub fn running_cases(&self) -> bool {
        self.procs.iter().any(|p| p.jobs.iter().any(|j| matches!(j.0, Work::Run(_))))
    }

    /// Sends `job` to worker `w`; false when its stdin is closed (it is dying).
    pub fn send(&mut self, w: usize, work: Work, job: Job) -> bool {
        let line = serde_json::to_string(&job).expect("jobs serialize") + "\n";
        let p = &mut self.procs[w];
        let ok = p.stdin.write_all(line.as_bytes()).and_then(|_| p.stdin.flush()).is_ok();
        if ok {
            p.jobs.push_back((work, job, Instant::now()));
        }
        ok
    }

    /// The next event, waiting at most `wait`; time limits are enforced on the way.
    pub fn next(&mut self, wait: Duration) -> anyhow::Result<Option<(usize, Event)>> {
        match self.rx.recv_timeout(wait) {
            Ok((id, generation, msg)) if self.procs[id].generation == generation => {
                if let Some(e) = self.on_message(id, msg)? {
                    return Ok(Some((id, e)));
                }
            }
            Ok(_) | Err(RecvTimeoutError::Timeout) => {} // a message from a replaced worker
            Err(RecvTimeoutError::Disconnected) => anyhow::bail!("all workers disconnected"),
        }
        self.enforce_limits()
    }

    fn on_message(&mut self, id: usize, msg: Msg) -> anyhow::Result<Option<Event>> {
        let p = &mut self.procs[id];
        match msg {
            Msg::Line(Reply::Ready) => {
                p.ready = true;
                if let Some(front) = p.jobs.front_mut() {
                    front.2 = Instant::now();
                }
                Ok(None)
            }
            Msg::Line(reply) => {
                let job = p.jobs.pop_front().map(|j| j.0);
                // The next queued job starts now.
                if let Some(front) = p.jobs.front_mut() {
                    front.2 = Instant::now();
                }
                Ok(Some(Event::Reply { job, reply }))
            }
            Msg::Gone => {
                let death = Death::of(p.child.wait().ok());
                self.replace(id, death).map(Some)
            }
        }
    }

    fn enforce_limits(&mut self) -> anyhow::Result<Option<(usize, Event)>> {
        for id in 0..self.procs.len() {
            let p = &mut self.procs[id];
            let Some((work, _, started)) = p.jobs.front() else { continue };
            let limit = match work {
                Work::Run(_) => self.run_limit,
                Work::Shrink => self.shrink_limit,
            };
            if p.ready && started.elapsed() > limit {
                p.child.kill().ok();
                p.child.wait().ok();
                return self.replace(id, Death::Timeout).map(|e| Some((id, e)));
            }
        }
        Ok(None)
    }

    /// Replaces worker `id` after `death`; case jobs queued behind the lost one never started,
    /// so the replacement gets them (a shrink is not retried).
    fn replace(&mut self, id: usize, death: Death) -> anyhow::Result<Event> {
        let mut lost = std::mem::take(&mut self.procs[id].jobs);
        let job = lost.pop_front().map(|j| j.0);
        let generation = self.procs[id].generation + 1;
        self.procs[id] = self.spawn(id, generation)?;
        for (work, job, _) in lost {
            if matches!(work, Work::Run(_)) {
                self.send(id, work, job);
            }
        }
        Ok(Event::Died { job, death })
    }

    /// Kills every worker.
    pub fn shutdown(&mut self) {
        for p in &mut self.procs {
            p.child.kill().ok();
            p.child.wait().ok();
        }
    }
}
