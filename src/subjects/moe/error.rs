//! Errors a run raises, as the recorder reports them: the stage and the Python exception kind
//! with its first line. The sharded run's errors travel to the harness as
//! [`DTensorError::Local`] whose kind is `stage:Kind`.

use dtensor::DTensorError;

names::named_enum! {
    /// Where a run failed (the recorder's `stage`).
    pub enum Stage("stage") {
        Config = "config",
        Mesh = "mesh",
        Parallelize = "parallelize",
        Forward = "forward",
        Backward = "backward",
        Hook = "hook",
    }
}

/// A run's failure.
#[derive(Clone, Debug, PartialEq)]
pub struct Fail {
    pub stage: Stage,
    /// The Python exception class ("ValueError", "RuntimeError", ...); "NotModelled" when the
    /// simulator does not model the case yet.
    pub kind: &'static str,
    pub message: String,
}

/// The `kind` of a [`DTensorError::Local`] for a stage and exception class, interned (a handful
/// of distinct values over a whole campaign).
fn tag(stage: Stage, kind: &str) -> &'static str {
    static SEEN: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let text = format!("{stage}:{kind}");
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(t) = seen.iter().find(|t| **t == text) {
        return t;
    }
    let t: &'static str = Box::leak(text.into_boxed_str());
    seen.push(t);
    t
}

impl Fail {
    pub fn new(stage: Stage, kind: &'static str, message: impl Into<String>) -> Fail {
        Fail { stage, kind, message: message.into() }
    }

    pub fn not_modelled(message: impl Into<String>) -> Fail {
        Fail::new(Stage::Config, "NotModelled", message)
    }

    /// A libtorch error as Python shows it: the first line without tch's prefix, as
    /// RuntimeError or (dim wrapping) IndexError, read as the DTensor runtime reads them.
    pub fn torch(stage: Stage, e: tch::TchError) -> Fail {
        match dtensor::local::torch_err(e) {
            DTensorError::Local { kind, message } => Fail::new(stage, kind, message),
            other => Fail::new(stage, "RuntimeError", other.to_string()),
        }
    }

    pub fn is_not_modelled(&self) -> bool {
        self.kind == "NotModelled"
    }

    pub fn into_dtensor(self) -> DTensorError {
        DTensorError::Local { kind: tag(self.stage, self.kind), message: self.message }
    }

    /// Reads back a failure from the harness's error (stage, kind, message).
    pub fn of(e: &DTensorError) -> Option<(String, String)> {
        match e {
            DTensorError::Local { kind, message } => {
                kind.split_once(':')?;
                Some((kind.to_string(), message.clone()))
            }
            _ => None,
        }
    }
}
