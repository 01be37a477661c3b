//! How an outcome the real torchtitan MoE layer recorded (`shardfuzz.outcome/2`, the recorder of
//! `python/moe_recorder`) compares with the model's run of the same case: the one
//! implementation that the replay test and `shardfuzz confirm` use.
//!
//! - the sharded run (`outcome`): a recorded error must be the model's error (same stage and
//!   exception class, same first line); a recorded success must be the model's success with
//!   every assembled output (y, x_grad, grad.*, tokens_per_expert, expert_bias) within the
//!   bound of [`bound`];
//! - the recorder's one-rank plain-torch run (`reference`, when recorded) against the model's
//!   unsharded reference: both run with every output within the same bound, or both raise.
//!
//! A case the model answers "not modelled yet" is [`Verdict::NotModelled`], not a difference.
//! Outputs that are rounding noise only ([`crate::run::noise_only`]) are not compared.

use crate::spec::MoeSpec;
use dtensor::DType;
use harness::case::Case;
use harness::run::Run;
use harness::tensor_data::TensorData;
use serde_json::Value;
use tch::{Device, Kind, Tensor};

/// One difference between the model and the recording.
#[derive(Clone, Debug, PartialEq)]
pub struct Mismatch {
    /// What differs: `ok`, `error`, an output's name, `reference y`, ...
    pub what: String,
    pub ours: String,
    pub real: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: real {}, ours {}", self.what, self.real, self.ours)
    }
}

fn mismatch(what: impl Into<String>, ours: impl Into<String>, real: impl Into<String>) -> Mismatch {
    Mismatch { what: what.into(), ours: ours.into(), real: real.into() }
}

/// What one side of the comparison came to.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Both ran, every compared output within its bound (how many outputs were compared).
    AgreeRan(usize),
    /// Both raised the same error (the sharded side) or both raised (the reference).
    AgreeRaised,
    Differ(Vec<Mismatch>),
    /// The model does not model this case yet (its message).
    NotModelled(String),
    /// Not comparable (why).
    NotCompared(String),
}

impl Verdict {
    pub fn agrees(&self) -> bool {
        matches!(self, Verdict::AgreeRan(_) | Verdict::AgreeRaised)
    }

    pub fn mismatches(&self) -> &[Mismatch] {
        match self {
            Verdict::Differ(v) => v,
            _ => &[],
        }
    }
}

/// The comparison of one outcome line.
#[derive(Clone, Debug, PartialEq)]
pub struct Crosscheck {
    pub sharded: Verdict,
    /// None when the line has no `reference`.
    pub reference: Option<Verdict>,
}

/// The case of an outcome line (its `case`, read as is).
pub fn case_of(line: &Value) -> Result<Case<MoeSpec>, String> {
    Case::from_value(line["case"].clone()).map_err(|e| e.0)
}

/// The recorded sharded outcome of a line: `outcome`, or `real` (the recorder's first drafts).
pub fn outcome_of(line: &Value) -> &Value {
    if line["outcome"].is_object() {
        &line["outcome"]
    } else {
        &line["real"]
    }
}

/// The bound within which an output agrees: relative to the recorded output's largest element
/// (the bf16 grouped GEMMs round every product) with a floor for gradients that nearly cancel;
/// the counts exactly, the expert bias to float32 rounding.
pub fn bound(name: &str, scale: f64, bf16: bool) -> f64 {
    match name {
        "tokens_per_expert" => 0.0,
        "expert_bias" => 1e-7,
        _ if bf16 => 4e-2 * scale + 1e-4,
        _ => 1e-2 * scale + 1e-5,
    }
}

/// Whether a case's outputs get the bf16 bound of [`bound`]: bf16 cases, and `tt-0.2.2`, whose
/// recordings ran the package's for-loop experts in float32 (`use_grouped_mm=False`, the only
/// experts path on CPU) while the model rounds as upstream's default bf16 grouped GEMM.
pub fn bf16_bound(case: &Case<MoeSpec>) -> bool {
    case.dtype == DType::BF16 || case.subject.revision == crate::MoeRev::Tt022
}

fn tensor(v: &Value) -> Option<Tensor> {
    let td: TensorData = serde_json::from_value(v.clone()).ok()?;
    Some(td.to_tensor(Device::Cpu))
}

/// Compares one output; `None` when it agrees.
pub fn differs(name: &str, real: &Tensor, ours: &Tensor, bf16: bool) -> Option<Mismatch> {
    if real.size() != ours.size() {
        return Some(mismatch(name, format!("shape {:?}", ours.size()), format!("shape {:?}", real.size())));
    }
    let (r, o) = (real.to_kind(Kind::Double), ours.to_kind(Kind::Double));
    if r.numel() == 0 {
        return None;
    }
    let diff = (&r - &o).abs().max().double_value(&[]);
    let scale = r.abs().max().double_value(&[]);
    let tol = bound(name, scale, bf16);
    (diff > tol || diff.is_nan()).then(|| {
        mismatch(name, format!("max |ours - real| {diff:.3e} > bound {tol:.3e}"), format!("max |value| {scale:.3e}"))
    })
}

/// `stage:Kind message`, as the model's errors are tagged.
fn recorded_error(real: &Value) -> (String, String) {
    let kind = format!("{}:{}", real["stage"].as_str().unwrap_or("?"), real["error"]["kind"].as_str().unwrap_or("?"));
    (kind, real["error"]["message"].as_str().unwrap_or("").to_string())
}

/// The sharded side: the model's run against the line's recorded outcome.
pub fn sharded(case: &Case<MoeSpec>, run: &Run, real: &Value) -> Verdict {
    let bf16 = bf16_bound(case);
    let real_ok = real["ok"].as_bool() == Some(true);
    match &run.sharded {
        Err(e) if crate::run::not_modelled(e) => Verdict::NotModelled(e.to_string()),
        Err(e) => {
            let (kind, message) = crate::error::Fail::of(e).unwrap_or(("?".into(), e.to_string()));
            let ours = format!("{kind} {message}");
            if real_ok {
                return Verdict::Differ(vec![mismatch("ok", format!("raised {ours}"), "ran")]);
            }
            let (want, want_msg) = recorded_error(real);
            if kind == want && message == want_msg {
                Verdict::AgreeRaised
            } else {
                Verdict::Differ(vec![mismatch("error", ours, format!("{want} {want_msg}"))])
            }
        }
        Ok(_) if !real_ok => {
            let (want, want_msg) = recorded_error(real);
            Verdict::Differ(vec![mismatch("ok", "ran", format!("raised {want} {want_msg}"))])
        }
        Ok(ours) => {
            let mut bad = Vec::new();
            let mut compared = 0;
            for (name, d) in ours.iter() {
                let rv = &real["outputs"][name]["value"];
                let Some(rt) = rv.is_object().then(|| tensor(rv)).flatten() else { continue };
                if crate::run::noise_only(&case.subject, name) {
                    continue;
                }
                let full = match d.full_tensor() {
                    Ok(f) => f,
                    Err(e) => {
                        bad.push(mismatch(name, format!("not gathered: {e}"), "assembled"));
                        continue;
                    }
                };
                compared += 1;
                bad.extend(differs(name, &rt, &full, bf16));
            }
            if compared == 0 && bad.is_empty() {
                bad.push(mismatch("outputs", "ran", "no assembled output to compare"));
            }
            if bad.is_empty() {
                Verdict::AgreeRan(compared)
            } else {
                Verdict::Differ(bad)
            }
        }
    }
}

/// The recorder's one-rank plain-torch run (`reference`) against the model's unsharded
/// reference: both must run with every output within its bound, or both raise. The model's
/// reference raises what the module raises whatever the sharding (the grouped GEMM's alignment
/// rule among others); the recorder's is plain math without those checks, so where the model's
/// reference raised exactly the error the real sharded module raised (`real`), the plain math
/// running is no difference.
pub fn reference(case: &Case<MoeSpec>, run: &Run, recorded: &Value, real: &Value) -> Verdict {
    let bf16 = bf16_bound(case);
    let module_error = |e: &dtensor::DTensorError| {
        let ours = crate::error::Fail::of(e);
        real["ok"].as_bool() == Some(false) && ours.is_some_and(|(k, m)| (k, m) == recorded_error(real))
    };
    match (&run.reference, recorded["ok"].as_bool() == Some(true)) {
        (Err(e), _) if crate::run::not_modelled(e) => Verdict::NotModelled(e.to_string()),
        (Err(e), true) if module_error(e) => Verdict::NotCompared(format!(
            "the model's reference raises the module's own error ({e}), which the recorder's plain-torch math \
             does not check"
        )),
        (Ok(ours), true) => {
            let mut bad = Vec::new();
            let mut compared = 0;
            for (name, r) in ours.iter() {
                let Some(rt) = tensor(&recorded["outputs"][name]) else { continue };
                if crate::run::noise_only(&case.subject, name) {
                    continue;
                }
                compared += 1;
                bad.extend(
                    differs(name, &rt, r, bf16).map(|m| Mismatch { what: format!("reference {}", m.what), ..m }),
                );
            }
            if bad.is_empty() {
                Verdict::AgreeRan(compared)
            } else {
                Verdict::Differ(bad)
            }
        }
        (Err(_), false) => Verdict::AgreeRaised,
        (Ok(_), false) => {
            let e = &recorded["error"];
            let real = format!("raised {} {}", e["kind"].as_str().unwrap_or("?"), e["message"].as_str().unwrap_or(""));
            Verdict::Differ(vec![mismatch("reference ok", "ran", real)])
        }
        (Err(e), true) => Verdict::Differ(vec![mismatch("reference ok", format!("raised {e}"), "ran")]),
    }
}

/// Compares a whole outcome line with the model's run of its case.
pub fn check(case: &Case<MoeSpec>, run: &Run, line: &Value) -> Crosscheck {
    let sharded = sharded(case, run, outcome_of(line));

    let real = outcome_of(line);
    let reference = line["reference"].is_object().then(|| reference(case, run, &line["reference"], real));
    Crosscheck { sharded, reference }
}

/// Reads an outcome line's case, runs the model on it and compares.
pub fn check_line(line: &Value) -> Result<(Case<MoeSpec>, Crosscheck), String> {
    let case = case_of(line)?;
    let (run, _) = harness::runner::run(&case, Device::Cpu).map_err(|e| e.0)?;
    let c = check(&case, &run, line);
    Ok((case, c))
}
