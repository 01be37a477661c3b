//! Campaigns: the coordinator that spawns worker subprocesses, hands out cases, buckets what
//! they find, shrinks each bucket's smallest case, and writes the report.
//!
//! Crash isolation: workers are spawned processes (libtorch holds threads, so no fork), each in
//! its own process group (a terminal Ctrl-C reaches only the coordinator). A worker that dies or
//! exceeds the per-case time limit loses only its case, which becomes a `crash` or `timeout`
//! reproducer; a new worker takes its place. A worker writes the case it is about to run to
//! `inflight/` first, and every finding is on disk (`findings.jsonl`, `cases/`) as soon as it arrives,
//! so a killed campaign loses nothing already found; SIGINT still writes the report.
//!
//! Determinism: case i is a pure function of (seed, i); results are aggregated by index, buckets
//! keep their lowest index and smallest case, and shrinking starts only after the last case, from
//! each bucket's smallest case. The same seed and case count give the same report.

use super::bucket::{self, Bucket, ShrinkInfo};
use super::case::{Case, CaseDevice};
use super::data;
use super::generate::{self, GenConfig};
use super::oracle::{Class, Verdict};
use super::report::{write_atomic, Cell, GridCell, Report, Row, TieStats, Timing, REPORT_FORMAT};
use super::shrink::{self, Budget};
use super::worker::{Fault, Job, Phases, Reply};
use crate::dtensor::RuleSet;
use crate::router::RouterRev;
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Routes SIGINT to [`INTERRUPTED`] (a second Ctrl-C still kills at once: the handler resets).
pub fn catch_sigint() {
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub seed: u64,
    pub cases: Option<u64>,
    pub time: Option<Duration>,
    pub jobs: usize,
    pub out: PathBuf,
    /// Where minimized reproducers are also copied (`corpus/repro`), if anywhere.
    pub corpus: Option<PathBuf>,
    pub gen: GenConfig,
    pub devices: Vec<CaseDevice>,
    pub per_case_timeout: Duration,
    pub shrink: Budget,
    pub no_shrink: bool,
    pub fault: Option<Fault>,
    pub exe: PathBuf,
    pub progress: bool,
}

/// Case `index` of a campaign: the generator's case on its device.
pub fn campaign_case(seed: u64, index: u64, gen: &GenConfig, devices: &[CaseDevice]) -> Case {
    let mut c = generate::nth(seed, index, gen);
    c.device = devices[(index % devices.len() as u64) as usize];
    c
}

/// Arguments that make a worker generate the same cases as the coordinator.
fn worker_args(cfg: &Config) -> Vec<String> {
    let list = |v: Vec<&str>| v.join(",");
    let mut a = vec![
        "worker".to_string(),
        "--inflight".into(),
        cfg.out.join("inflight").display().to_string(),
        "--seed".into(),
        cfg.seed.to_string(),
        "--size".into(),
        format!("{:?}", cfg.gen.size).to_lowercase(),
        "--layouts".into(),
        cfg.gen.layouts.name().into(),
        "--shapes".into(),
        cfg.gen.shapes.name().into(),
        "--devices".into(),
        list(
            cfg.devices
                .iter()
                .map(|d| match d {
                    CaseDevice::Cpu => "cpu",
                    CaseDevice::Cuda(_) => "cuda",
                })
                .collect(),
        ),
    ];
    if !cfg.gen.routers.is_empty() {
        a.push("--router".into());
        a.push(list(cfg.gen.routers.iter().map(|r| r.name()).collect()));
    }
    if !cfg.gen.rules.is_empty() {
        a.push("--rules".into());
        a.push(list(cfg.gen.rules.iter().map(|r| r.name()).collect()));
    }
    if let Some(f) = cfg.fault {
        a.push("--inject-fault".into());
        a.push(match f {
            Fault::Abort(n) => format!("abort@{n}"),
            Fault::Segv(n) => format!("segv@{n}"),
            Fault::Hang(n) => format!("hang@{n}"),
        });
    }
    a
}

enum Msg {
    Reply(Reply),
    Gone,
}

#[derive(Clone, Debug)]
enum Work {
    Run(u64),
    Shrink,
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    generation: u64,
    /// Jobs sent and not answered, oldest (the one running) first, with the time it started.
    jobs: VecDeque<(Work, Instant)>,
    /// The worker has loaded libtorch; time limits apply from then on.
    ready: bool,
}

/// Jobs queued per worker, so that it never waits for the coordinator between cases.
const DEPTH: usize = 4;

fn spawn(cfg: &Config, id: usize, generation: u64, tx: &Sender<(usize, u64, Msg)>) -> anyhow::Result<Worker> {
    let mut child = Command::new(&cfg.exe)
        .args(worker_args(cfg))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start a worker ({}): {e}", cfg.exe.display()))?;
    let stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let tx = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let msg = match serde_json::from_str::<Reply>(&line) {
                Ok(r) => Msg::Reply(r),
                Err(e) => Msg::Reply(Reply::Failed { message: format!("unreadable reply: {e}") }),
            };
            if tx.send((id, generation, msg)).is_err() {
                return;
            }
        }
        let _ = tx.send((id, generation, Msg::Gone));
    });
    Ok(Worker { child, stdin, generation, jobs: VecDeque::new(), ready: false })
}

/// What the coordinator has learned so far.
struct State {
    rows: BTreeMap<(RouterRev, RuleSet), Row>,
    buckets: BTreeMap<String, Bucket>,
    /// Smallest case per bucket (kept in memory for shrinking).
    smallest: BTreeMap<String, Case>,
    ties: TieStats,
    grid: BTreeMap<(String, String), (u64, u64)>,
    phases: Phases,
    cases: u64,
    diverging: u64,
}

fn mesh_label(c: &Case) -> String {
    let v: Vec<String> = c.mesh.shape.iter().map(|s| s.to_string()).collect();
    format!("({})", v.join(","))
}

fn layout_label(c: &Case) -> String {
    let v: Vec<String> = c.layout.x.iter().map(|p| p.to_string()).collect();
    v.join(",")
}

impl State {
    fn new(cfg: &Config) -> State {
        let routers = if cfg.gen.routers.is_empty() { RouterRev::ALL.to_vec() } else { cfg.gen.routers.clone() };
        let rules = if cfg.gen.rules.is_empty() { RuleSet::ALL.to_vec() } else { cfg.gen.rules.clone() };
        let mut rows = BTreeMap::new();
        for r in &routers {
            for s in &rules {
                rows.insert((*r, *s), Row { router: r.name().into(), rules: s.name().into(), ..Row::default() });
            }
        }
        State {
            rows,
            buckets: BTreeMap::new(),
            smallest: BTreeMap::new(),
            ties: TieStats::default(),
            grid: BTreeMap::new(),
            phases: Phases::default(),
            cases: 0,
            diverging: 0,
        }
    }

    /// Records one judged case; returns the signatures seen for the first time.
    fn record(&mut self, cfg: &Config, index: u64, case: &Case, verdicts: &[Verdict]) -> anyhow::Result<Vec<String>> {
        self.cases += 1;
        let row = self.rows.entry((case.revision.router, case.revision.rules)).or_default();
        row.cases += 1;
        let g = self.grid.entry((mesh_label(case), layout_label(case))).or_insert((0, 0));
        g.0 += 1;
        if verdicts.is_empty() {
            return Ok(vec![]);
        }
        self.diverging += 1;
        row.diverging += 1;
        g.1 += 1;
        let mut classes: Vec<Class> = verdicts.iter().map(|v| v.class).collect();
        classes.sort();
        classes.dedup();
        for c in classes {
            row.classes.entry(c).or_default().cases += 1;
        }
        let mut new = Vec::new();
        for v in verdicts {
            let sig = v.signature(case);
            let size = shrink::size_key(case);
            match self.buckets.get_mut(&sig) {
                Some(b) => {
                    b.count += 1;
                    if index < b.first_index {
                        b.first_index = index;
                        b.known =
                            super::known::Known::of(&sig, case).into_iter().map(|k| k.name().to_string()).collect();
                        write_case(&cfg.out.join(&b.first_case), case)?;
                    }
                    // Instances of a known bug come first, so its reproducer shrinks as one;
                    // the order is total, so arrival order does not matter.
                    let unknown = |c: &Case| super::known::Known::of(&sig, c).is_empty();
                    let was = self.smallest.get(&sig).is_none_or(unknown);
                    if (unknown(case), size, index) < (was, b.smallest_size, b.smallest_index) {
                        b.smallest_size = size;
                        b.smallest_index = index;
                        b.detail = v.detail.clone();
                        self.smallest.insert(sig.clone(), case.clone());
                    }
                }
                None => {
                    let first_case = format!("cases/{}.json", bucket::slug(&sig));
                    write_case(&cfg.out.join(&first_case), case)?;
                    append_finding(&cfg.out, &sig, index, &first_case)?;
                    self.buckets.insert(
                        sig.clone(),
                        Bucket {
                            signature: sig.clone(),
                            class: v.class,
                            count: 1,
                            first_index: index,
                            smallest_index: index,
                            smallest_size: size,
                            detail: v.detail.clone(),
                            explanation: bucket::explain(v),
                            first_case,
                            repro: None,
                            shrink: None,
                            known: super::known::Known::of(&sig, case)
                                .into_iter()
                                .map(|k| k.name().to_string())
                                .collect(),
                        },
                    );
                    self.smallest.insert(sig.clone(), case.clone());
                    new.push(sig);
                }
            }
        }
        Ok(new)
    }

    fn report(&self, cfg: &Config, interrupted: bool, timing: Timing) -> Report {
        let mut rows: Vec<Row> = self.rows.values().cloned().collect();
        // Link each class cell to its smallest bucket.
        for r in &mut rows {
            for (class, cell) in r.classes.iter_mut() {
                cell.smallest = self
                    .buckets
                    .values()
                    .filter(|b| {
                        b.class == *class && {
                            let p = bucket::parts(&b.signature);
                            p.router == r.router && p.rules == r.rules
                        }
                    })
                    .min_by_key(|b| {
                        (
                            b.shrink.as_ref().map(|s| (s.ranks, s.tokens, s.experts * s.model)).unwrap_or((
                                b.smallest_size.0,
                                b.smallest_size.1,
                                b.smallest_size.2,
                            )),
                            b.signature.clone(),
                        )
                    })
                    .map(|b| b.signature.clone());
            }
        }
        let _ = Cell::default();
        Report {
            format: REPORT_FORMAT.into(),
            seed: cfg.seed,
            jobs: cfg.jobs,
            cases: self.cases,
            diverging_cases: self.diverging,
            devices: cfg.devices.iter().map(|d| d.to_string()).collect(),
            libtorch: crate::device::loaded_libtorch_version().unwrap_or_else(|| "unknown".into()),
            size: format!("{:?}", cfg.gen.size).to_lowercase(),
            interrupted,
            rows,
            buckets: self.buckets.values().cloned().collect(),
            near_ties: self.ties.clone(),
            grid: self
                .grid
                .iter()
                .map(|((m, l), (c, d))| GridCell { mesh: m.clone(), layout: l.clone(), cases: *c, diverging: *d })
                .collect(),
            regression: None,
            timing,
        }
    }
}

fn write_case(path: &Path, case: &Case) -> anyhow::Result<()> {
    let mut c = case.clone();
    if c.tensors.is_none() {
        c.tensors = Some(data::inline(&c));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    write_atomic(path, &(c.to_json() + "\n"))?;
    Ok(())
}

fn append_finding(out: &Path, sig: &str, index: u64, file: &str) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(out.join("findings.jsonl"))?;
    writeln!(f, "{}", serde_json::json!({ "signature": sig, "index": index, "case": file }))?;
    f.flush()?;
    Ok(())
}

fn send(w: &mut Worker, job: &Job) -> bool {
    let line = serde_json::to_string(job).expect("jobs serialize");
    w.stdin.write_all(line.as_bytes()).and_then(|_| w.stdin.write_all(b"\n")).and_then(|_| w.stdin.flush()).is_ok()
}

/// Runs a campaign and returns its report (already written to `cfg.out`).
pub fn run(cfg: &Config) -> anyhow::Result<Report> {
    std::fs::create_dir_all(cfg.out.join("inflight"))?;
    std::fs::create_dir_all(cfg.out.join("cases"))?;
    let _ = std::fs::remove_file(cfg.out.join("findings.jsonl"));
    let start = Instant::now();
    let case_deadline = cfg.time.map(|t| start + if cfg.no_shrink { t } else { t.mul_f64(0.75) });
    let deadline = cfg.time.map(|t| start + t);
    let limit = cfg.cases.unwrap_or(u64::MAX);

    let (tx, rx): (Sender<(usize, u64, Msg)>, Receiver<(usize, u64, Msg)>) = channel();
    let mut workers: Vec<Worker> = (0..cfg.jobs).map(|i| spawn(cfg, i, 0, &tx)).collect::<anyhow::Result<_>>()?;
    let mut state = State::new(cfg);
    let mut next: u64 = 0;
    let mut shrink_queue: VecDeque<String> = VecDeque::new();
    let mut shrinking_started = false;
    let mut shrink_ms: u64 = 0;

    let bar = indicatif::ProgressBar::new(cfg.cases.unwrap_or(0));
    if !cfg.progress {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} {bar:24} {pos} cases  {per_sec}  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );

    loop {
        let interrupted = INTERRUPTED.load(Ordering::SeqCst);
        let cases_open = !interrupted && next < limit && case_deadline.is_none_or(|d| Instant::now() < d);
        let busy_runs = workers.iter().any(|w| w.jobs.iter().any(|j| matches!(j.0, Work::Run(_))));
        if !cases_open && !busy_runs && !shrinking_started {
            shrinking_started = true;
            if !cfg.no_shrink && !interrupted {
                shrink_queue.extend(state.buckets.keys().cloned());
            }
        }
        // Hand out work: cases are queued DEPTH deep, shrinks one at a time.
        for w in workers.iter_mut() {
            let out_of_time = deadline.is_some_and(|d| Instant::now() >= d);
            if shrinking_started {
                if interrupted || out_of_time {
                    shrink_queue.clear();
                }
                if !w.jobs.is_empty() {
                    continue;
                }
                let Some(sig) = shrink_queue.pop_front() else { break };
                let case = state.smallest[&sig].clone();
                let remaining =
                    deadline.map(|d| d.saturating_duration_since(Instant::now())).unwrap_or(cfg.shrink.max_time);
                let job = Job::Shrink {
                    case: Box::new(case),
                    signature: sig,
                    max_tries: cfg.shrink.max_tries,
                    max_ms: cfg.shrink.max_time.min(remaining).as_millis() as u64,
                };
                if send(w, &job) {
                    w.jobs.push_back((Work::Shrink, Instant::now()));
                }
            } else {
                while w.jobs.len() < DEPTH
                    && !INTERRUPTED.load(Ordering::SeqCst)
                    && next < limit
                    && case_deadline.is_none_or(|d| Instant::now() < d)
                {
                    if !send(w, &Job::Run { index: next }) {
                        break;
                    }
                    w.jobs.push_back((Work::Run(next), Instant::now()));
                    next += 1;
                }
            }
        }
        if workers.iter().all(|w| w.jobs.is_empty()) && (shrinking_started && shrink_queue.is_empty()) {
            break;
        }

        let msg = rx.recv_timeout(Duration::from_millis(50));
        let mut dead: Option<(usize, Option<i32>, Option<i32>)> = None;
        match msg {
            Ok((id, generation, m)) if workers[id].generation == generation => match m {
                Msg::Reply(Reply::Ready) => {
                    workers[id].ready = true;
                    if let Some(front) = workers[id].jobs.front_mut() {
                        front.1 = Instant::now();
                    }
                }
                Msg::Reply(reply) => {
                    let job = workers[id].jobs.pop_front();
                    // The next queued job starts now.
                    if let Some(front) = workers[id].jobs.front_mut() {
                        front.1 = Instant::now();
                    }
                    match (reply, job) {
                        (Reply::Result { index, verdicts, near_ties, phases, .. }, _) => {
                            let case = campaign_case(cfg.seed, index, &cfg.gen, &cfg.devices);
                            let new = state.record(cfg, index, &case, &verdicts)?;
                            for sig in new {
                                bar.println(format!("new bucket at case {index}: {sig}"));
                            }
                            state.ties.tokens += near_ties.rows as u64;
                            state.ties.topk_near_ties += near_ties.topk_rows as u64;
                            state.ties.group_near_ties += near_ties.group_rows as u64;
                            state.ties.flipped += near_ties.flipped_rows as u64;
                            state.ties.cases_with_near_ties +=
                                u64::from(near_ties.topk_rows + near_ties.group_rows > 0);
                            for (a, b) in [
                                (&mut state.phases.generate_us, phases.generate_us),
                                (&mut state.phases.inputs_us, phases.inputs_us),
                                (&mut state.phases.reference_us, phases.reference_us),
                                (&mut state.phases.sharded_us, phases.sharded_us),
                                (&mut state.phases.shadow_us, phases.shadow_us),
                                (&mut state.phases.oracles_us, phases.oracles_us),
                            ] {
                                *a += b;
                            }
                            bar.inc(1);
                        }
                        (Reply::Shrunk { signature, case, tried, kept, elapsed_ms, truncated, lost }, _) => {
                            shrink_ms += elapsed_ms;
                            if !lost {
                                let file = format!("repro/{}.json", bucket::slug(&signature));
                                write_case(&cfg.out.join(&file), &case)?;
                                if let Some(corpus) = &cfg.corpus {
                                    write_case(&corpus.join(format!("{}.json", bucket::slug(&signature))), &case)?;
                                }
                                if let Some(b) = state.buckets.get_mut(&signature) {
                                    b.repro = Some(file);
                                    b.shrink = Some(ShrinkInfo {
                                        tried,
                                        kept,
                                        ms: elapsed_ms,
                                        truncated,
                                        ranks: case.ranks(),
                                        tokens: case.dims.batch * case.dims.seq,
                                        experts: case.dims.experts,
                                        model: case.dims.model,
                                    });
                                }
                            }
                        }
                        (Reply::Ready, _) => unreachable!("handled above"),
                        (Reply::Failed { message }, job) => {
                            bar.println(format!("shardfuzz: worker could not run {job:?}: {message}"));
                            if let Some((Work::Run(_), _)) = job {
                                bar.inc(1);
                            }
                        }
                    }
                }
                Msg::Gone => {
                    let status = workers[id].child.wait().ok();
                    dead = Some((id, status.and_then(|s| s.signal()), status.and_then(|s| s.code())));
                }
            },
            Ok(_) => {} // a message from a worker that was already replaced
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => anyhow::bail!("all workers disconnected"),
        }
        // Per-case time limit.
        for (id, w) in workers.iter_mut().enumerate() {
            if let (true, Some((work, t))) = (w.ready, w.jobs.front()) {
                let limit = match work {
                    Work::Run(_) => cfg.per_case_timeout,
                    Work::Shrink => cfg.shrink.max_time + cfg.per_case_timeout * 2,
                };
                if t.elapsed() > limit && dead.is_none() {
                    let _ = w.child.kill();
                    let _ = w.child.wait();
                    dead = Some((id, Some(-1), None));
                }
            }
        }
        if let Some((id, signal, code)) = dead {
            let mut lost = std::mem::take(&mut workers[id].jobs);
            let job = lost.pop_front();
            let generation = workers[id].generation + 1;
            workers[id] = spawn(cfg, id, generation, &tx)?;
            // Jobs queued behind the one that failed never started: run them again.
            for (work, _) in lost {
                let j = match work {
                    Work::Run(index) => Job::Run { index },
                    Work::Shrink => continue,
                };
                if send(&mut workers[id], &j) {
                    workers[id].jobs.push_back((work, Instant::now()));
                }
            }
            if let Some((Work::Run(index), _)) = job {
                let case = campaign_case(cfg.seed, index, &cfg.gen, &cfg.devices);
                let (class, key) = match (signal, code) {
                    (Some(-1), _) => (Class::Timeout, format!("over {}s", cfg.per_case_timeout.as_secs())),
                    (Some(s), _) => (Class::Crash, format!("signal {s}")),
                    (None, Some(c)) => (Class::Crash, format!("exit {c}")),
                    _ => (Class::Crash, "unknown".into()),
                };
                let v = Verdict {
                    class,
                    output: None,
                    expected: serde_json::json!("a result"),
                    actual: serde_json::json!(key),
                    detail: format!(
                        "worker {} while running case {index}",
                        if class == Class::Timeout { "timed out" } else { "died" }
                    ),
                    key,
                };
                let new = state.record(cfg, index, &case, &[v])?;
                for sig in new {
                    bar.println(format!("new bucket at case {index}: {sig}"));
                }
                bar.inc(1);
            }
        }
        let left = deadline
            .map(|d| format!("  {}s left", d.saturating_duration_since(Instant::now()).as_secs()))
            .unwrap_or_default();
        bar.set_message(format!(
            "{} buckets{}{left}",
            state.buckets.len(),
            if shrinking_started { "  (shrinking)" } else { "" }
        ));
    }
    bar.finish_and_clear();
    for w in &mut workers {
        let _ = w.child.kill();
        let _ = w.child.wait();
    }
    let _ = std::fs::remove_dir_all(cfg.out.join("inflight"));
    let wall = start.elapsed().as_secs_f64();
    let timing = Timing {
        wall_s: wall,
        cases_per_s: state.cases as f64 / wall.max(1e-9),
        shrink_s: shrink_ms as f64 / 1000.0,
        phases_us: state.phases.clone(),
    };
    let report = state.report(cfg, INTERRUPTED.load(Ordering::SeqCst), timing);
    report.write(&cfg.out)?;
    Ok(report)
}
