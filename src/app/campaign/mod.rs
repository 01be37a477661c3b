//! Campaigns: a coordinator hands cases to worker subprocesses ([`pool`]), records what they
//! find ([`state`]), shrinks each bucket's smallest case, and writes the report.
//!
//! Crash isolation: a worker that dies or exceeds the per-case time limit loses only its case,
//! which becomes a `crash` or `timeout` bucket; a new worker takes its place. A worker writes the
//! case it is about to run to `inflight/` first, and every finding is on disk (`findings.jsonl`,
//! `cases/`) as soon as it arrives, so a killed campaign loses nothing already found; SIGINT
//! still writes the report.
//!
//! Determinism: case i is a pure function of (seed, i); results are aggregated by index, buckets
//! keep their lowest index and smallest case, and shrinking starts only after the last case, from
//! each bucket's smallest case. The same seed and case count give the same report.
//!
//! Scale-out ([`shard`], [`merge`]): a shard runs the cases `i mod N = I` of the same stream and
//! shrinks its own buckets; merging keeps, per bucket, what a single run would have kept (the
//! lowest index, the smallest case by the same order, and the reproducer shrunk from it).

pub mod merge;
pub mod pool;
pub mod recover;
pub mod shard;
pub mod state;

use crate::bucket::ShrinkInfo;
use crate::report::{write_atomic, Report};
use crate::subjects::{AnyCase, GenConfig};
use crate::worker::{Fault, Job, Reply, Setup};
use dtensor::device::Dev;
use harness::oracle::{Class, Verdict};
use harness::shrink::Budget;
use harness::signature::Signature;
use harness::subject::Subject;
use pool::{Death, Event, Pool, Work, DEPTH};
use shard::{Manifest, Shard};
use state::{write_case, State};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
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

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

#[derive(Clone, Debug)]
pub struct Config {
    pub seed: u64,
    pub cases: Option<u64>,
    pub time: Option<Duration>,
    pub jobs: usize,
    pub out: PathBuf,
    /// Where minimized reproducers go (default `OUT/repro`); the report links to them there.
    pub corpus: Option<PathBuf>,
    pub gen: GenConfig,
    pub devices: Vec<Dev>,
    pub per_case_timeout: Duration,
    pub shrink: Budget,
    pub no_shrink: bool,
    pub fault: Option<Fault>,
    pub exe: PathBuf,
    pub progress: bool,
    /// The part of the case stream this process runs.
    pub shard: Shard,
}

impl Config {
    /// What every worker gets on its first line.
    pub fn setup(&self) -> Setup {
        Setup {
            seed: self.seed,
            gen: self.gen.clone(),
            devices: self.devices.clone(),
            inflight: Some(self.out.join("inflight")),
            fault: self.fault,
            limits: harness::limits::get(),
        }
    }
}

/// How often the coordinator writes `checkpoint.json`: the counts a `kill -9` can lose.
const CHECKPOINT: Duration = Duration::from_secs(3);

/// The order buckets are shrunk in: round-robin over their mechanisms (as the report's findings
/// group them), smallest case first within one, so that a shrink phase cut short by the deadline
/// has shrunk every mechanism's smallest bucket before any mechanism's second (in signature order
/// the value buckets came last and went unshrunk in a 2-minute campaign of both subjects).
fn shrink_order(state: &State) -> Vec<Signature> {
    let mut groups: std::collections::BTreeMap<String, Vec<_>> = Default::default();
    for (sig, b) in &state.buckets {
        groups.entry(crate::triage::mechanism_of(b)).or_default().push((b.smallest_size, b.smallest_index, sig));
    }
    let mut ranked: Vec<_> = groups
        .into_values()
        .flat_map(|mut g| {
            g.sort();
            g.into_iter().enumerate().map(|(round, (size, index, sig))| (round, size, index, sig.clone()))
        })
        .collect();
    ranked.sort();
    ranked.into_iter().map(|(.., sig)| sig).collect()
}

/// Where the coordinator is in its schedule.
struct Schedule {
    next: u64,
    /// Cases of this shard are `next`, `next + step`, ...
    step: u64,
    limit: u64,
    start: Instant,
    checkpointed: Instant,
    /// No new case after this (shrinking gets the rest of the time).
    case_deadline: Option<Instant>,
    deadline: Option<Instant>,
    shrinking: bool,
    shrink_queue: VecDeque<Signature>,
}

impl Schedule {
    fn new(cfg: &Config, start: Instant) -> Schedule {
        Schedule {
            next: cfg.shard.index,
            step: cfg.shard.count,
            limit: cfg.cases.unwrap_or(u64::MAX),
            start,
            checkpointed: start,
            case_deadline: cfg.time.map(|t| start + if cfg.no_shrink { t } else { t.mul_f64(0.75) }),
            deadline: cfg.time.map(|t| start + t),
            shrinking: false,
            shrink_queue: VecDeque::new(),
        }
    }

    fn cases_open(&self) -> bool {
        !interrupted() && self.next < self.limit && self.case_deadline.is_none_or(|d| Instant::now() < d)
    }

    fn out_of_time(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Shrinking starts once the last case is in, from every bucket (unless stopped early).
    fn maybe_start_shrinking(&mut self, cfg: &Config, pool: &Pool, state: &State) {
        if !self.shrinking && !self.cases_open() && !pool.running_cases() {
            self.shrinking = true;
            if !cfg.no_shrink && !interrupted() {
                self.shrink_queue.extend(shrink_order(state));
            }
        }
    }

    /// Queues cases DEPTH deep per worker, or one shrink per idle worker.
    fn hand_out(&mut self, cfg: &Config, pool: &mut Pool, state: &State) {
        if self.shrinking && (interrupted() || self.out_of_time()) {
            self.shrink_queue.clear();
        }
        for w in 0..pool.len() {
            if !self.shrinking {
                while pool.queued(w) < DEPTH && self.cases_open() {
                    if !pool.send(w, Work::Run(self.next), Job::Run { index: self.next }) {
                        break;
                    }
                    self.next = self.next.saturating_add(self.step);
                }
            } else if pool.queued(w) == 0 {
                let Some(sig) = self.shrink_queue.pop_front() else { break };
                let remaining =
                    self.deadline.map_or(cfg.shrink.max_time, |d| d.saturating_duration_since(Instant::now()));
                let job = Job::Shrink {
                    case: Box::new(state.smallest[&sig].clone()),
                    signature: sig,
                    max_tries: cfg.shrink.max_tries,
                    max_ms: cfg.shrink.max_time.min(remaining).as_millis() as u64,
                };
                pool.send(w, Work::Shrink, job);
            }
        }
    }

    fn finished(&self, pool: &Pool) -> bool {
        self.shrinking && self.shrink_queue.is_empty() && pool.all_idle()
    }
}

/// Runs a campaign and returns its report (already written to `cfg.out`).
pub fn run(cfg: &Config) -> anyhow::Result<Report> {
    std::fs::create_dir_all(cfg.out.join("inflight"))?;
    std::fs::create_dir_all(cfg.out.join("cases"))?;
    if let Some(dir) = &cfg.corpus {
        std::fs::create_dir_all(dir)?;
    }
    // Stale files of an earlier campaign would mix with this one.
    for stale in ["findings.jsonl", recover::CHECKPOINT_FILE, "report.json"] {
        std::fs::remove_file(cfg.out.join(stale)).ok();
    }
    Manifest::of(cfg).write(&cfg.out)?;
    let start = Instant::now();
    let shrink_limit = cfg.shrink.max_time + cfg.per_case_timeout * 2;
    let mut pool = Pool::start(cfg.exe.clone(), &cfg.setup(), cfg.jobs, cfg.per_case_timeout, shrink_limit)?;
    let mut state = State::new(cfg);
    let mut sched = Schedule::new(cfg, start);
    let bar = progress_bar(cfg);
    let result = coordinate(cfg, &mut pool, &mut state, &mut sched, &bar);
    bar.finish_and_clear();
    pool.shutdown();
    result?;
    std::fs::remove_dir_all(cfg.out.join("inflight")).ok();
    let report = state.report(cfg, interrupted(), start.elapsed().as_secs_f64());
    report.write(&cfg.out)?;
    std::fs::remove_file(cfg.out.join(recover::CHECKPOINT_FILE)).ok();
    Ok(report)
}

fn coordinate(
    cfg: &Config,
    pool: &mut Pool,
    state: &mut State,
    sched: &mut Schedule,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    loop {
        sched.maybe_start_shrinking(cfg, pool, state);
        sched.hand_out(cfg, pool, state);
        if sched.finished(pool) {
            return Ok(());
        }
        match pool.next(Duration::from_millis(50))? {
            Some((_, Event::Reply { job, reply })) => on_reply(cfg, state, bar, job, reply)?,
            Some((_, Event::Died { job: Some(Work::Run(index)), death })) => on_death(cfg, state, bar, index, death)?,
            Some((_, Event::Died { .. })) | None => {}
        }
        bar.set_message(progress_message(cfg, state, sched, bar));
        if sched.checkpointed.elapsed() >= CHECKPOINT {
            sched.checkpointed = Instant::now();
            recover::checkpoint(&cfg.out, &state.report(cfg, true, sched.start.elapsed().as_secs_f64()))?;
        }
    }
}

/// The progress line's message: buckets, the rate (whole cases per second), and with a time
/// budget the cases so far and the time left (the bar itself counts the time down); while
/// shrinking, the buckets still to shrink.
fn progress_message(cfg: &Config, state: &State, sched: &Schedule, bar: &indicatif::ProgressBar) -> String {
    let elapsed = sched.start.elapsed();
    let n = state.cases_done();
    let rate = n as f64 / elapsed.as_secs_f64().max(1e-3);
    let mut msg = format!("{} bucket(s), {rate:.0} cases/s", state.buckets.len());
    if let Some(d) = sched.deadline {
        bar.set_position(elapsed.as_secs().min(cfg.time.map_or(0, |t| t.as_secs())));
        let left = d.saturating_duration_since(Instant::now()).as_secs();
        msg = format!("{n} cases, {msg}, {}m{:02}s left", left / 60, left % 60);
    }
    if sched.shrinking {
        msg.push_str(&format!("; shrinking, {} bucket(s) to go", sched.shrink_queue.len()));
    }
    msg
}

fn on_reply(
    cfg: &Config,
    state: &mut State,
    bar: &indicatif::ProgressBar,
    job: Option<Work>,
    reply: Reply,
) -> anyhow::Result<()> {
    match reply {
        Reply::Result { index, verdicts, near_ties, grads, phases } => {
            let case = cfg.setup().case(index);
            record(cfg, state, bar, index, &case, &verdicts)?;
            state.add_stats(&near_ties, &grads, &phases);
        }
        Reply::Shrunk { signature, case, tried, kept, elapsed_ms, truncated, lost } => {
            state.add_shrink_time(elapsed_ms);
            if !lost {
                let file = write_repro(cfg, &signature, &case)?;
                let script = write_script(&cfg.out, &signature, &case)?;
                let d = case.subject.size(&case);
                let info = ShrinkInfo {
                    tried,
                    kept,
                    ms: elapsed_ms,
                    truncated,
                    ranks: d.ranks,
                    tokens: d.tokens,
                    experts: d.experts,
                    model: d.model,
                };
                state.shrunk(&signature, file, script, info);
            }
        }
        Reply::Failed { message } => {
            bar.println(format!("shardfuzz: worker could not run {job:?}: {message}"));
            // A case the worker could not run is a finding too, not a gap in the count.
            if let Some(Work::Run(index)) = job {
                let v = Verdict {
                    class: Class::Crash,
                    output: None,
                    expected: serde_json::json!("a result"),
                    actual: serde_json::json!("failed"),
                    detail: format!("the worker could not run case {index}: {message}"),
                    key: "failed".into(),
                    backward: false,
                };
                record(cfg, state, bar, index, &cfg.setup().case(index), &[v])?;
            }
        }
        Reply::Ready => {}
    }
    Ok(())
}

/// A worker died running case `index`: the case becomes a `crash` or `timeout` divergence.
fn on_death(
    cfg: &Config,
    state: &mut State,
    bar: &indicatif::ProgressBar,
    index: u64,
    death: Death,
) -> anyhow::Result<()> {
    let (class, key) = match death {
        Death::Timeout => (Class::Timeout, format!("over {}s", cfg.per_case_timeout.as_secs())),
        Death::Signal(s) => (Class::Crash, format!("signal {s}")),
        Death::Exit(c) => (Class::Crash, format!("exit {c}")),
        Death::Unknown => (Class::Crash, "unknown".into()),
    };
    let how = if class == Class::Timeout { "timed out" } else { "died" };
    let v = Verdict {
        class,
        output: None,
        expected: serde_json::json!("a result"),
        actual: serde_json::json!(key),
        detail: format!("worker {how} while running case {index}"),
        key,
        backward: false,
    };
    record(cfg, state, bar, index, &cfg.setup().case(index), &[v])
}

fn record(
    cfg: &Config,
    state: &mut State,
    bar: &indicatif::ProgressBar,
    index: u64,
    case: &AnyCase,
    v: &[Verdict],
) -> anyhow::Result<()> {
    for sig in state.record(&cfg.out, index, case, v)? {
        bar.println(format!("new bucket at case {index}: {sig}"));
    }
    // With a case count the bar counts cases; with a time budget it counts the time down.
    if cfg.cases.is_some() {
        bar.inc(1);
    }
    Ok(())
}

/// Writes a minimized reproducer (inputs inline) and returns its path relative to the campaign
/// directory, for the report's links.
fn write_repro(cfg: &Config, sig: &Signature, case: &AnyCase) -> anyhow::Result<String> {
    let name = format!("{}.json", sig.slug());
    match &cfg.corpus {
        None => {
            write_case(&cfg.out.join("repro").join(&name), case, true)?;
            Ok(format!("repro/{name}"))
        }
        Some(dir) => {
            write_case(&dir.join(&name), case, true)?;
            Ok(relative(&dir.join(&name), &cfg.out))
        }
    }
}

/// Writes the reproducer as a standalone PyTorch script (`shardfuzz export`) to
/// `OUT/repro/<slug>.py`, in the campaign directory even when reproducers go to a corpus (a
/// script is for an upstream report, not for replay), and returns its path relative to `out`.
pub fn write_script(out: &Path, sig: &Signature, case: &AnyCase) -> anyhow::Result<String> {
    let rel = format!("repro/{}.py", sig.slug());
    let c = harness::data::with_inline(case);
    std::fs::create_dir_all(out.join("repro"))?;
    write_atomic(&out.join(&rel), &crate::export::script(&c))?;
    Ok(rel)
}

/// `path` as seen from directory `from` (both made absolute first).
fn relative(path: &Path, from: &Path) -> String {
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let (p, f) = (abs(path), abs(from));
    let common = p.components().zip(f.components()).take_while(|(a, b)| a == b).count();
    let ups = f.components().count() - common;
    let mut out: Vec<String> = vec!["..".to_string(); ups];
    out.extend(p.components().skip(common).map(|c| c.as_os_str().to_string_lossy().into_owned()));
    out.join("/")
}

/// The campaign's progress bar: "i of N cases" with an ETA for `--cases`, a countdown of the
/// time budget for `--time`.
fn progress_bar(cfg: &Config) -> indicatif::ProgressBar {
    let (len, template) = match (cfg.cases, cfg.time) {
        (Some(n), _) => (cfg.shard.len_below(n), "{elapsed_precise} {bar:24} {pos} of {len} cases, ETA {eta}  {msg}"),
        (None, Some(t)) => (t.as_secs().max(1), "{elapsed_precise} {bar:24} {msg}"),
        (None, None) => (0, "{elapsed_precise} {msg}"),
    };
    let bar = indicatif::ProgressBar::new(len);
    if !cfg.progress {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template(template).unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_climb_to_the_common_ancestor() {
        assert_eq!(
            relative(Path::new("/a/corpus/repro/x.json"), Path::new("/a/reports/example")),
            "../../corpus/repro/x.json"
        );
        assert_eq!(relative(Path::new("/a/out/repro/x.json"), Path::new("/a/out")), "repro/x.json");
    }
}
