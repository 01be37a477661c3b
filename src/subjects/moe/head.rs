//! `tt-head` (torchtitan b5bcd76, after #4121): x is (T, D) and the token dim 0 is sharded by
//! dp, then cp, then tp (tp only with SP). The layer's code is 0.3.0's with the batch folded
//! into the tokens (router, routing map, dispatch, combine and shared experts all work on the
//! rows of a (T, D) block), so the model runs the 0.3.0 blocks on x viewed as (dp, L, D), one
//! row of L tokens per dp rank (the case's `batch` is dp), and folds y and x's gradient back to
//! (T, D): a (dp, cp) block's (1, l, D) local is that rank's (l, D) token chunk, and Shard(1) on
//! cp and tp becomes Shard(0) nested under dp's. What differs before the layer runs is here:
//! the checks of `ParallelDims`, the trainer and the model config at HEAD.

use crate::error::{Fail, Stage};
use crate::spec::MoeSpec;
use dtensor::DTensor;
use harness::case::Common;
use harness::run::{Inputs, Named};
use harness::tensor_data::Ordered;
use placement::Placement;
use tch::Tensor;

/// The outputs shaped like x (the rest keep their shapes).
const TOKEN_OUTPUTS: [&str; 2] = ["y", "x_grad"];

/// Whether the case's revision folds the batch into the tokens.
pub fn folds(s: &MoeSpec) -> bool {
    s.revision.folds_batch()
}

/// The inputs with x and grad_y viewed as (batch, seq, model), the shape the blocks take;
/// unchanged before `tt-head`.
pub fn blocks_view(s: &MoeSpec, inputs: &Inputs) -> Inputs {
    let d = s.dims;
    let shape = [d.batch as i64, d.seq as i64, d.model as i64];
    let view = |name: &str, t: &Tensor| {
        if folds(s) && (name == "x" || name == "grad_y") {
            t.reshape(shape)
        } else {
            t.shallow_clone()
        }
    };
    Inputs(Ordered(inputs.0 .0.iter().map(|(n, t)| (n.clone(), view(n, t))).collect()))
}

fn tokens_2d(t: &Tensor) -> Tensor {
    let s = t.size();
    t.reshape([s[0] * s[1], s[2]])
}

/// The reference's y and x_grad as (T, D).
pub fn fold_reference(s: &MoeSpec, mut out: Named<Tensor>) -> Named<Tensor> {
    if folds(s) {
        for (name, t) in out.0.iter_mut() {
            if TOKEN_OUTPUTS.contains(&name.as_str()) {
                *t = tokens_2d(t);
            }
        }
    }
    out
}

/// The sharded y and x_grad as (T, D) DTensors: each rank's (1, l, D) local becomes (l, D) and
/// a shard of dim 0 or 1 becomes a shard of dim 0 (nested in mesh order: dp, cp, tp).
pub fn fold_sharded(s: &MoeSpec, mut out: Named<DTensor>) -> Result<Named<DTensor>, Fail> {
    if !folds(s) {
        return Ok(out);
    }
    let d = s.dims;
    for (name, t) in out.0.iter_mut() {
        if !TOKEN_OUTPUTS.contains(&name.as_str()) {
            continue;
        }
        let locals: Vec<Tensor> = t.locals.iter().map(tokens_2d).collect();
        let ps: Vec<Placement> = t
            .placements
            .iter()
            .map(|p| if matches!(p, Placement::Shard(_)) { Placement::Shard(0) } else { *p })
            .collect();
        let whole = Some(vec![d.batch * d.seq, d.model]);
        *t = DTensor::from_local(locals, &t.mesh, &ps, whole)
            .map_err(|e| Fail::new(Stage::Forward, "RuntimeError", e.to_string()))?;
    }
    Ok(out)
}

/// HEAD's checks before the layer runs, in the order the trainer meets them: `ParallelDims`
/// (ep must divide dp_shard·cp·tp, #4258), the trainer's token count per dp rank (SP and CP
/// divisibility, #4121; with `trainer_checks`), the model config's expert count (#4258).
pub fn checks(s: &MoeSpec, c: &Common) -> Result<(), Fail> {
    let (dp, cp, tp) = MoeSpec::axes(c);
    let p = s.parallel;
    let region = (dp / p.dp_replicate) * cp * tp;
    if !region.is_multiple_of(p.ep) {
        return Err(Fail::new(
            Stage::Mesh,
            "ValueError",
            format!("expert_parallel_degree ({}) must divide dp_shard * cp * tp ({region})", p.ep),
        ));
    }
    let div = s.seq_divisor(c);
    if s.trainer_checks && !s.dims.seq.is_multiple_of(div) {
        return Err(Fail::new(
            Stage::Config,
            "ValueError",
            format!(
                "The number of tokens per pipeline microbatch ({}) must be divisible by {div} for the configured sequence/context parallelism.",
                s.dims.seq
            ),
        ));
    }
    if !s.dims.experts.is_multiple_of(p.ep) {
        return Err(Fail::new(
            Stage::Config,
            "ValueError",
            format!("moe.num_experts ({}) must be divisible by expert_parallel_degree ({}).", s.dims.experts, p.ep),
        ));
    }
    Ok(())
}
