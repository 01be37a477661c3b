//! The worker side of a campaign: a subprocess that reads jobs as JSON lines on stdin and
//! answers on stdout. Campaigns spawn workers (never fork: libtorch holds threads), so a libtorch
//! abort, a segfault or a hang loses only the job in flight.

use super::case::Case;
use super::case::CaseDevice;
use super::generate::GenConfig;
use super::oracle::{self, nondeterminism, NearTies, Verdict};
use super::runner::{self, Timings};
use super::shrink::{self, Budget};
use crate::device::Dev;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Job {
    /// Generate case `index` of the campaign's stream, run and judge it.
    Run { index: u64 },
    /// Shrink a case while it keeps `signature`.
    Shrink { case: Box<Case>, signature: String, max_tries: usize, max_ms: u64 },
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phases {
    pub generate_us: u64,
    pub inputs_us: u64,
    pub reference_us: u64,
    pub sharded_us: u64,
    pub shadow_us: u64,
    pub oracles_us: u64,
}

impl Phases {
    fn add(&mut self, t: &Timings) {
        self.inputs_us += t.inputs.as_micros() as u64;
        self.reference_us += t.reference.as_micros() as u64;
        self.sharded_us += t.sharded.as_micros() as u64;
        self.shadow_us += t.shadow.as_micros() as u64;
        self.oracles_us += t.oracles.as_micros() as u64;
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Result {
        index: u64,
        verdicts: Vec<Verdict>,
        signatures: Vec<String>,
        near_ties: NearTies,
        phases: Phases,
    },
    Shrunk {
        signature: String,
        case: Box<Case>,
        tried: usize,
        kept: usize,
        elapsed_ms: u64,
        truncated: bool,
        /// The shrunk case no longer showed the signature on a final check (should not happen).
        lost: bool,
    },
    /// The job could not run (an invalid case from a shrink request, say).
    Failed {
        message: String,
    },
    /// Sent once at start: libtorch is loaded and jobs can run (time limits start now).
    Ready,
}

/// Cases whose index is a multiple of this are also run twice (nondeterminism probe).
pub const PROBE_EVERY: u64 = 32;

/// A fault to inject for testing crash isolation: `abort@N`, `segv@N` or `hang@N` at case N.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Abort(u64),
    Segv(u64),
    Hang(u64),
}

impl std::str::FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, at) = s.split_once('@').ok_or("expected abort@N, segv@N or hang@N")?;
        let n: u64 = at.parse().map_err(|_| format!("bad case index in '{s}'"))?;
        match kind {
            "abort" => Ok(Fault::Abort(n)),
            "segv" => Ok(Fault::Segv(n)),
            "hang" => Ok(Fault::Hang(n)),
            _ => Err(format!("unknown fault '{kind}' (abort, segv or hang)")),
        }
    }
}

fn inject(fault: Option<Fault>, index: u64) {
    match fault {
        Some(Fault::Abort(n)) if n == index => std::process::abort(),
        Some(Fault::Segv(n)) if n == index => unsafe {
            libc::raise(libc::SIGSEGV);
        },
        Some(Fault::Hang(n)) if n == index => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        _ => {}
    }
}

/// The file holding the case a worker is about to run. Rewritten in place, never truncated:
/// on ext4 with discard, create-or-truncate per case cost more than running a small case.
/// A shorter case leaves trailing spaces, which JSON readers skip.
pub struct Inflight {
    file: std::fs::File,
    len: usize,
}

impl Inflight {
    pub fn create(path: &std::path::Path) -> std::io::Result<Inflight> {
        let file = std::fs::OpenOptions::new().create(true).write(true).truncate(true).open(path)?;
        Ok(Inflight { file, len: 0 })
    }

    pub fn write(&mut self, text: &str) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let mut buf = Vec::with_capacity(text.len().max(self.len));
        buf.extend_from_slice(text.as_bytes());
        buf.resize(self.len.max(text.len()), b' ');
        self.file.write_all_at(&buf, 0)?;
        self.len = buf.len();
        Ok(())
    }
}

/// Runs case `index` of a campaign and judges it, writing it to `inflight` first.
pub fn run_index(
    seed: u64,
    index: u64,
    cfg: &GenConfig,
    devices: &[CaseDevice],
    inflight: Option<&mut Inflight>,
    fault: Option<Fault>,
) -> std::io::Result<Reply> {
    let t = Instant::now();
    let case = super::campaign::campaign_case(seed, index, cfg, devices);
    let gen_us = t.elapsed().as_micros() as u64;
    // The case goes to disk before it runs: if this process dies, it is not lost.
    if let Some(f) = inflight {
        f.write(&case.to_json())?;
    }
    inject(fault, index);
    Ok(match judge_case(&case, case.device.into(), index.is_multiple_of(PROBE_EVERY)) {
        Ok((verdicts, near_ties, mut phases)) => {
            phases.generate_us = gen_us;
            let signatures = verdicts.iter().map(|v| v.signature(&case)).collect();
            Reply::Result { index, verdicts, signatures, near_ties, phases }
        }
        Err(message) => Reply::Failed { message },
    })
}

/// Runs and judges one case; `probe` also runs it a second time.
pub fn judge_case(case: &Case, dev: Dev, probe: bool) -> Result<(Vec<Verdict>, NearTies, Phases), String> {
    let run = runner::run(case, dev.tch()).map_err(|e| e.0)?;
    let t = Instant::now();
    let mut j = oracle::judge(case, &run);
    if probe {
        let again = runner::run(case, dev.tch()).map_err(|e| e.0)?;
        nondeterminism::check(&run, &again, &mut j);
    }
    let mut phases = Phases::default();
    phases.add(&run.timings);
    phases.oracles_us = t.elapsed().as_micros() as u64;
    Ok((j.verdicts, j.near_ties, phases))
}

/// True when the case shows `signature`.
pub fn shows(case: &Case, dev: Dev, signature: &str) -> bool {
    let Ok(run) = runner::run(case, dev.tch()) else { return false };
    let j = oracle::judge(case, &run);
    j.verdicts.iter().any(|v| v.signature(case) == signature)
}

/// What a shrink must keep: the signature, and membership in the known upstream bugs the
/// original is an instance of (so a "sequence shorter than its shards" reproducer does not drift
/// into a different case of the same error text).
pub fn keeps<'a>(original: &Case, dev: Dev, signature: &'a str) -> impl FnMut(&Case) -> bool + 'a {
    let known = super::known::Known::of(signature, original);
    move |c: &Case| known.iter().all(|k| k.matches(signature, c)) && shows(c, dev, signature)
}

pub fn shrink_job(case: &Case, signature: &str, budget: Budget, dev: Dev) -> Reply {
    let mut case = case.clone();
    case.device = dev.into();
    let mut keep = keeps(&case, dev, signature);
    let s = shrink::shrink(&case, budget, &mut keep);
    let lost = !keep(&s.case);
    Reply::Shrunk {
        signature: signature.into(),
        case: Box::new(s.case),
        tried: s.tried,
        kept: s.kept,
        elapsed_ms: s.elapsed.as_millis() as u64,
        truncated: s.truncated,
        lost,
    }
}

/// The worker loop: one job per stdin line, one reply per stdout line.
pub fn serve(
    seed: u64,
    cfg: &GenConfig,
    devices: &[CaseDevice],
    fault: Option<Fault>,
    inflight: Option<&std::path::Path>,
) -> std::io::Result<()> {
    // Die with the coordinator, even when it is SIGKILLed.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    crate::device::init();
    serde_json::to_writer(&mut out, &Reply::Ready)?;
    out.write_all(b"\n")?;
    out.flush()?;
    let mut file = match inflight {
        Some(dir) => Some(Inflight::create(&dir.join(format!("w{}.json", std::process::id())))?),
        None => None,
    };
    for line in stdin.lock().lines() {
        let line = line?;
        let reply = match serde_json::from_str::<Job>(&line) {
            Ok(Job::Run { index }) => run_index(seed, index, cfg, devices, file.as_mut(), fault)?,
            Ok(Job::Shrink { case, signature, max_tries, max_ms }) => {
                let dev = case.device.into();
                shrink_job(&case, &signature, Budget { max_tries, max_time: Duration::from_millis(max_ms) }, dev)
            }
            Err(e) => Reply::Failed { message: format!("bad job: {e}") },
        };
        serde_json::to_writer(&mut out, &reply)?;
        out.write_all(b"\n")?;
        out.flush()?;
    }
    Ok(())
}
