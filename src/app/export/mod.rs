//! `shardfuzz export FILE --pytorch OUT.py`: a case as a standalone PyTorch script for an
//! upstream issue. The script itself is the subject's ([`Subject::export`]); here is what every
//! subject's script prints beside real PyTorch's verdict: what the model says of the case.

use crate::subjects::AnyCase;
use dtensor::device::Dev;
use harness::check::{check_guarded, Options};
use harness::subject::{Model, Subject};

/// The model's verdict classes and signatures for `case` (a crash is a class too).
pub fn model(case: &AnyCase) -> Model {
    match check_guarded(case, Dev::Cpu, Options::default()) {
        Ok(c) => {
            Model { classes: c.judgement.classes(), signatures: c.signatures().iter().map(|s| s.to_string()).collect() }
        }
        Err(crashed) => Model { classes: vec!["crash".into()], signatures: vec![crashed.signature().to_string()] },
    }
}

/// The whole script for `case` (validated; tensors inline or drawn from its seed).
pub fn script(case: &AnyCase) -> String {
    case.subject.export(case, &model(case))
}
