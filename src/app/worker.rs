//! The worker side of a campaign: a subprocess that reads its [`Setup`] as the first JSON line
//! on stdin, then one job per line, and answers one reply per line on stdout. Campaigns spawn
//! workers (never fork: libtorch holds threads), so a libtorch abort, a segfault or a hang loses
//! only the job in flight.

use crate::subjects::{AnyCase, GenConfig};
use dtensor::device::Dev;
use harness::check::{check, check_guarded, guard, Options};
use harness::limits::Limits;
use harness::oracle::{GradTally, NearTies, Verdict};
use harness::shrink::{self, Budget};
use harness::signature::Signature;
use harness::subject::Subject;
use harness::timing::{micros, Phases};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Everything a worker needs to generate the coordinator's cases, sent as one JSON line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Setup {
    pub seed: u64,
    pub gen: GenConfig,
    /// Case `i` runs on `devices[i % len]`.
    pub devices: Vec<Dev>,
    /// Directory where the case about to run is written first.
    pub inflight: Option<PathBuf>,
    /// Test hook: fail on one case.
    pub fault: Option<Fault>,
    /// The coordinator's size limits (shrink jobs validate cases).
    #[serde(default = "default_limits")]
    pub limits: Limits,
}

fn default_limits() -> Limits {
    Limits::DEFAULT
}

impl Setup {
    /// Case `index` of the campaign: the generator's case on its device.
    pub fn case(&self, index: u64) -> AnyCase {
        let mut c = self.gen.nth(self.seed, index);
        c.device = self.devices[(index % self.devices.len() as u64) as usize];
        c
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Job {
    /// Generate case `index` of the campaign's stream, run and judge it.
    Run { index: u64 },
    /// Shrink a case while it keeps `signature`.
    Shrink { case: Box<AnyCase>, signature: Signature, max_tries: usize, max_ms: u64 },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Result {
        index: u64,
        verdicts: Vec<Verdict>,
        near_ties: NearTies,
        #[serde(default)]
        grads: GradTally,
        phases: Phases,
    },
    Shrunk {
        signature: Signature,
        case: Box<AnyCase>,
        tried: usize,
        kept: usize,
        elapsed_ms: u64,
        truncated: bool,
        /// The shrunk case no longer showed the signature on a final check (should not happen).
        lost: bool,
    },
    /// The job could not run (an invalid case from a shrink request, say).
    Failed { message: String },
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
    /// A Rust panic inside the case's check (caught: a `crash` verdict, the worker lives on).
    Panic(u64),
}

impl std::str::FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, at) = s.split_once('@').ok_or("expected abort@N, segv@N, hang@N or panic@N")?;
        let n: u64 = at.parse().map_err(|_| format!("bad case index in '{s}'"))?;
        match kind {
            "abort" => Ok(Fault::Abort(n)),
            "segv" => Ok(Fault::Segv(n)),
            "hang" => Ok(Fault::Hang(n)),
            "panic" => Ok(Fault::Panic(n)),
            _ => Err(format!("unknown fault '{kind}' (abort, segv, hang or panic)")),
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Abort(n) => write!(f, "abort@{n}"),
            Fault::Segv(n) => write!(f, "segv@{n}"),
            Fault::Hang(n) => write!(f, "hang@{n}"),
            Fault::Panic(n) => write!(f, "panic@{n}"),
        }
    }
}

names::serde_as_str!(Fault);

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
    pub fn create(path: &Path) -> std::io::Result<Inflight> {
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
pub fn run_index(setup: &Setup, index: u64, inflight: Option<&mut Inflight>) -> std::io::Result<Reply> {
    let t = Instant::now();
    let case = setup.case(index);
    let generate_us = micros(t.elapsed());
    // The case goes to disk before it runs: if this process dies, it is not lost.
    if let Some(f) = inflight {
        f.write(&case.to_json())?;
    }
    inject(setup.fault, index);
    let opts = Options { twice: index.is_multiple_of(PROBE_EVERY), ..Options::default() };
    let panic_here = setup.fault == Some(Fault::Panic(index));
    let checked = guard(&case, case.device, || {
        if panic_here {
            panic!("injected panic at case {index}");
        }
        check(&case, case.device, opts)
    });
    Ok(match checked {
        Ok(c) => {
            let phases = Phases { generate_us, ..c.phases };
            let (verdicts, near_ties, grads) = (c.judgement.verdicts, c.judgement.near_ties, c.judgement.grads);
            Reply::Result { index, verdicts, near_ties, grads, phases }
        }
        Err(crashed) => {
            let (near_ties, grads) = Default::default();
            let phases = Phases { generate_us, ..Phases::default() };
            Reply::Result { index, verdicts: vec![crashed.verdict], near_ties, grads, phases }
        }
    })
}

/// What a shrink must keep: the signature, and membership in the known upstream bugs the
/// original is an instance of (so a "sequence shorter than its shards" reproducer does not drift
/// into a different case of the same error text).
pub fn keeps<'a>(original: &AnyCase, dev: Dev, signature: &'a Signature) -> impl FnMut(&AnyCase) -> bool + 'a {
    let known = original.subject.known(original, signature);
    move |c: &AnyCase| {
        let still = c.subject.known(c, signature);
        known.iter().all(|k| still.contains(k))
            && match check_guarded(c, dev, Options::default()) {
                Ok(r) => r.shows(signature),
                Err(crashed) => crashed.signature() == *signature,
            }
    }
}

pub fn shrink_job(case: &AnyCase, signature: &Signature, budget: Budget, dev: Dev) -> Reply {
    let mut case = case.clone();
    case.device = dev;
    let mut keep = keeps(&case, dev, signature);
    let s = shrink::shrink(&case, budget, &mut keep);
    let lost = !keep(&s.case);
    Reply::Shrunk {
        signature: signature.clone(),
        case: Box::new(s.case),
        tried: s.tried,
        kept: s.kept,
        elapsed_ms: s.elapsed.as_millis() as u64,
        truncated: s.truncated,
        lost,
    }
}

fn answer(out: &mut impl Write, reply: &Reply) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, reply)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// The worker loop: the setup line, then one job per stdin line, one reply per stdout line.
pub fn serve() -> std::io::Result<()> {
    // Die with the coordinator, even when it is SIGKILLed.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    let mut lines = std::io::stdin().lock().lines();
    let first = lines.next().transpose()?.unwrap_or_default();
    let setup: Setup = serde_json::from_str(&first)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("bad worker setup: {e}")))?;
    harness::limits::set(setup.limits);
    let mut out = std::io::stdout().lock();
    answer(&mut out, &Reply::Ready)?;
    let mut file = match &setup.inflight {
        Some(dir) => Some(Inflight::create(&dir.join(format!("w{}.json", std::process::id())))?),
        None => None,
    };
    for line in lines {
        let reply = match serde_json::from_str::<Job>(&line?) {
            Ok(Job::Run { index }) => run_index(&setup, index, file.as_mut())?,
            Ok(Job::Shrink { case, signature, max_tries, max_ms }) => {
                let budget = Budget { max_tries, max_time: Duration::from_millis(max_ms) };
                shrink_job(&case, &signature, budget, case.device)
            }
            Err(e) => Reply::Failed { message: format!("bad job: {e}") },
        };
        answer(&mut out, &reply)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setup_line_carries_every_generator_setting_and_device() {
        let mut gen = GenConfig::default();
        gen.common.device = Dev::Cuda(1);
        let setup = Setup {
            seed: 9,
            gen,
            devices: vec![Dev::Cuda(1), Dev::Cpu],
            inflight: None,
            fault: None,
            limits: Limits::DEFAULT,
        };
        let line = serde_json::to_string(&setup).unwrap();
        assert!(!line.contains('\n'));
        let back: Setup = serde_json::from_str(&line).unwrap();
        assert_eq!(back, setup);
        // `nightly --device cuda:1`: the worker's cases run on device 1, not on device 0.
        assert_eq!(back.case(0).device, Dev::Cuda(1));
        assert_eq!(back.case(1).device, Dev::Cpu);
        assert_eq!(back.case(2), setup.case(2));
    }
}
