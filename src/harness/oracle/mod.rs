//! Oracles: each verdict class in its own file, each working on named outputs and knowing no
//! subject. A subject adds the verdicts only it can give ([`Subject::judge`]) and says how its
//! values compare ([`Subject::values`]); near-ties are counted as information, never reported as
//! divergences.

pub mod comm;
pub mod device;
pub mod error;
pub mod grad;
pub mod layout;
pub mod nondeterminism;
pub mod placement;
pub mod shape;
pub mod value;

use crate::case::Case;
use crate::run::Run;
use crate::subject::Subject;
use crate::timing::oracle;
pub use crate::verdict::{Class, GradTally, Judgement, NearTies, Verdict};

/// Runs every oracle but nondeterminism and device (which need a second run; see
/// [`nondeterminism`], [`device`]).
pub fn judge<S: Subject>(case: &Case<S>, run: &Run, extra: &S::Extra) -> Judgement {
    let mut j = Judgement::default();
    oracle("error", || error::check(run, &mut j));
    if let (Ok(r), Ok(s)) = (&run.reference, &run.sharded) {
        // Shapes first: the value oracle leaves out what a shape verdict already explains.
        oracle("shape and layout", || shape::check(r, s, &mut j));
        oracle("values", || case.subject.values(case, run, extra, r, s, &mut j));
        oracle("placement", || placement::check(run, s, &mut j));
    }
    oracle("comm", || comm::check(run, &mut j));
    oracle("comm (backward)", || comm::check_backward(run, &mut j));
    oracle("subject's own", || case.subject.judge(case, run, extra, &mut j));
    j
}
