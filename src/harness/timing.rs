//! Where a case's time goes, phase by phase: one type for the runner, the workers, campaigns,
//! the bench and reports. Times are summed microseconds, so phases of many cases add up.

use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phases {
    pub generate_us: u64,
    pub inputs_us: u64,
    pub reference_us: u64,
    pub sharded_us: u64,
    pub shadow_us: u64,
    /// The boundary program and the reference gradients of backward cases.
    #[serde(default)]
    pub backward_us: u64,
    pub oracles_us: u64,
}

/// Reads one phase.
pub(crate) type PhaseOf = fn(&Phases) -> u64;

/// Names and accessors, in report order.
pub const PHASES: [(&str, PhaseOf); 7] = [
    ("generate", |p| p.generate_us),
    ("inputs", |p| p.inputs_us),
    ("reference", |p| p.reference_us),
    ("sharded", |p| p.sharded_us),
    ("float64 shadow", |p| p.shadow_us),
    ("backward", |p| p.backward_us),
    ("oracles", |p| p.oracles_us),
];

impl Phases {
    pub fn add(&mut self, o: &Phases) {
        self.generate_us += o.generate_us;
        self.inputs_us += o.inputs_us;
        self.reference_us += o.reference_us;
        self.sharded_us += o.sharded_us;
        self.shadow_us += o.shadow_us;
        self.backward_us += o.backward_us;
        self.oracles_us += o.oracles_us;
    }

    pub fn total_us(&self) -> u64 {
        PHASES.iter().map(|(_, f)| f(self)).sum()
    }
}

/// Runs `f` and adds its wall time to `slot`.
pub fn timed<T>(slot: &mut u64, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let r = f();
    *slot += micros(t.elapsed());
    r
}

pub fn micros(d: Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}

thread_local! {
    /// Per-oracle summed microseconds, kept only while [`record_oracles`] asked for them.
    static ORACLE_COSTS: std::cell::RefCell<Option<Vec<(&'static str, u64)>>> = const { std::cell::RefCell::new(None) };
}

/// Starts (or with `false` stops) summing each oracle's time on this thread; see [`oracle`].
pub fn record_oracles(on: bool) {
    ORACLE_COSTS.with(|c| *c.borrow_mut() = on.then(Vec::new));
}

/// The summed time per oracle since [`record_oracles`], in first-seen order, and a fresh start.
pub fn take_oracle_costs() -> Vec<(&'static str, u64)> {
    ORACLE_COSTS.with(|c| c.borrow_mut().as_mut().map(std::mem::take).unwrap_or_default())
}

/// Runs oracle `name`, adding its wall time to its sum while recording (the bench's per-oracle
/// table); otherwise just runs it. Nested names are timed apart (a part of an oracle is named
/// `oracle: part`, and its time is also in the oracle's).
pub fn oracle<T>(name: &'static str, f: impl FnOnce() -> T) -> T {
    if ORACLE_COSTS.with(|c| c.borrow().is_none()) {
        return f();
    }
    let t = Instant::now();
    let r = f();
    let us = micros(t.elapsed());
    ORACLE_COSTS.with(|c| {
        if let Some(v) = c.borrow_mut().as_mut() {
            match v.iter_mut().find(|(n, _)| *n == name) {
                Some(slot) => slot.1 += us,
                None => v.push((name, us)),
            }
        }
    });
    r
}
