//! The simulated DTensor's autograd at its boundaries, on small hand-built programs: the labels
//! DTensor attaches (`to_local` labels without communicating, `from_local` and `redistribute`
//! move a mismatched gradient, Partial normalised to Replicate by default), the collectives the
//! backward logs, and per-rank gradients of ops against hand-computed values.

use dtensor::autograd::{Tape, Val};
use dtensor::{Ctx, DTensor, Op, RuleSet};
use placement::{Mesh, Placement, ReduceOp};
use std::sync::Arc;
use tch::{Kind, Tensor};

const R: Placement = Placement::Replicate;
const P: Placement = Placement::Partial(ReduceOp::Sum);
const S0: Placement = Placement::Shard(0);

fn mesh(n: usize) -> Arc<Mesh> {
    Arc::new(Mesh::new(vec![n], vec!["tp".into()]).unwrap())
}

fn floats(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).contiguous().view(-1)).unwrap()
}

fn t(v: &[f32]) -> Tensor {
    Tensor::from_slice(v)
}

/// Rank r's seed gradient: `(r + 1) · ones`, so a missing or doubled reduction changes values.
fn seeds(ranks: usize, len: i64) -> Val {
    Val::L((0..ranks).map(|r| Tensor::ones([len], (Kind::Float, tch::Device::Cpu)) * (r as f64 + 1.0)).collect())
}

fn ops(ctx: &Ctx) -> Vec<String> {
    ctx.comms.iter().map(|c| c.op.clone()).collect()
}

/// A replicated leaf, its `to_local` with `label`, seeded per rank; the leaf's gradient.
fn through_to_local(label: Option<Vec<Placement>>) -> (Ctx, DTensor, String) {
    let m = mesh(2);
    let mut ctx = Ctx::new(RuleSet::Torch213);
    let mut tape = Tape::new(&m);
    let x = tape.leaf(Val::D(DTensor::distribute(&t(&[1.0, 2.0]), &m, &[R]).unwrap()), true);
    let l = tape.to_local(x, label, "site.to_local");
    let g = tape.backward(&mut ctx, vec![(l, seeds(2, 2))]).unwrap().remove(&x).unwrap();
    let what = g.sites.iter().map(|s| format!("{}: {}", s.name, s.what)).collect::<Vec<_>>().join("; ");
    (ctx, g.val.dtensor().clone(), what)
}

#[test]
fn to_local_labels_the_gradient_without_communicating() {
    let (ctx, g, site) = through_to_local(Some(vec![P]));
    assert!(ctx.comms.is_empty(), "to_local's backward communicated: {:?}", ops(&ctx));
    assert_eq!(g.placements, vec![P]);
    assert_eq!(floats(&g.full_tensor().unwrap()), vec![3.0, 3.0], "P(sum) of 1s and 2s");
    assert_eq!(site, "site.to_local: to_local label [P(sum)]");
}

#[test]
fn to_local_without_a_label_keeps_unequal_locals_labelled_replicate() {
    // The forward placement (R) labels per-rank gradients that differ: each rank keeps its own,
    // and reading the gradient as R takes rank 0's. This is the class of #2387.
    let (ctx, g, site) = through_to_local(None);
    assert!(ctx.comms.is_empty());
    assert_eq!(g.placements, vec![R]);
    assert_eq!(floats(&g.locals[0]), vec![1.0, 1.0]);
    assert_eq!(floats(&g.locals[1]), vec![2.0, 2.0]);
    assert!(site.ends_with("(default)"), "{site}");
}

/// Locals `[r+1, r+1]` per rank wrapped by `from_local(placements, grad)`, a DTensor gradient
/// `g` seeded on the result; the per-rank gradients of the locals and the backward's comms.
fn through_from_local(
    placements: &[Placement],
    grad: Option<Vec<Placement>>,
    g: DTensor,
) -> (Vec<Vec<f64>>, Vec<String>) {
    let m = g.mesh.clone();
    let mut ctx = Ctx::new(RuleSet::Torch213);
    let mut tape = Tape::new(&m);
    let x = tape.leaf(seeds(m.size(), 2), true);
    let d = tape.from_local(x, placements, grad, "site.from_local").unwrap();
    let out = tape.backward(&mut ctx, vec![(d, Val::D(g))]).unwrap().remove(&x).unwrap();
    (out.val.locals().iter().map(floats).collect(), ops(&ctx))
}

/// A Partial(sum) gradient whose ranks hold `(r + 1) · base`.
fn partial(m: &Arc<Mesh>, base: &[f32]) -> DTensor {
    let mut d = DTensor::distribute(&t(base), m, &[R]).unwrap();
    d.locals = d.locals.iter().enumerate().map(|(r, l)| l * (r as f64 + 1.0)).collect();
    d.placements = vec![P];
    d
}

#[test]
fn from_local_reduces_a_partial_gradient_to_its_replicate_placement() {
    let m = mesh(2);
    let (locals, comms) = through_from_local(&[R], None, partial(&m, &[1.0, 2.0]));
    assert_eq!(comms, vec!["all_reduce"]);
    assert_eq!(locals, vec![vec![3.0, 6.0], vec![3.0, 6.0]]);
}

#[test]
fn from_local_reduce_scatters_a_partial_gradient_to_a_shard() {
    let m = mesh(2);
    let (locals, comms) = through_from_local(&[S0], None, partial(&m, &[1.0, 2.0, 3.0, 4.0]));
    assert_eq!(comms, vec!["reduce_scatter"]);
    assert_eq!(locals, vec![vec![3.0, 6.0], vec![9.0, 12.0]]);
}

#[test]
fn from_local_keeps_a_gradient_that_already_has_the_label() {
    // grad_placements=[P(sum)] on a P(sum) gradient: nothing moves, each rank keeps its share.
    let m = mesh(2);
    let (locals, comms) = through_from_local(&[R], Some(vec![P]), partial(&m, &[1.0, 2.0]));
    assert!(comms.is_empty(), "{comms:?}");
    assert_eq!(locals, vec![vec![1.0, 2.0], vec![2.0, 4.0]]);
}

/// A leaf `x` redistributed to `to`, seeded with `g`; the leaf's gradient and the backward's comms.
fn through_redistribute(x: DTensor, to: &[Placement], g: DTensor) -> (DTensor, Vec<String>) {
    let mut ctx = Ctx::new(RuleSet::Torch213);
    let mut tape = Tape::new(&x.mesh);
    let x = tape.leaf(Val::D(x), true);
    let y = tape.redistribute(&mut ctx, x, to, "site.redistribute").unwrap();
    let forward = ctx.comms.len();
    let out = tape.backward(&mut ctx, vec![(y, Val::D(g))]).unwrap().remove(&x).unwrap();
    (out.val.dtensor().clone(), ops(&ctx)[forward..].to_vec())
}

fn dist(v: &[f32], m: &Arc<Mesh>, p: Placement) -> DTensor {
    DTensor::distribute(&t(v), m, &[p]).unwrap()
}

#[test]
fn redistribute_backward_turns_a_source_partial_into_replicate() {
    let m = mesh(2);
    let (grad, comms) = through_redistribute(partial(&m, &[1.0; 4]), &[R], dist(&[1.0; 4], &m, R));
    assert!(comms.is_empty(), "{comms:?}");
    assert_eq!(grad.placements, vec![R]);
}

#[test]
fn redistribute_backward_keeps_a_partial_gradient_partial() {
    let m = mesh(2);
    let (grad, comms) = through_redistribute(partial(&m, &[1.0; 4]), &[R], partial(&m, &[1.0; 4]));
    assert!(comms.is_empty(), "{comms:?}");
    assert_eq!(grad.placements, vec![P]);
    assert_eq!(floats(&grad.full_tensor().unwrap()), vec![3.0; 4]);
}

#[test]
fn redistribute_backward_returns_a_replicate_gradient_to_the_source_shard() {
    let m = mesh(2);
    let x = dist(&[0.0; 4], &m, S0);
    let (grad, comms) = through_redistribute(x, &[R], dist(&[1.0, 2.0, 3.0, 4.0], &m, R));
    assert!(comms.is_empty(), "R -> S(0) is a local chunk: {comms:?}");
    assert_eq!(grad.placements, vec![S0]);
    assert_eq!(floats(&grad.locals[1]), vec![3.0, 4.0]);
}

#[test]
fn redistribute_backward_all_gathers_a_shard_gradient_of_a_replicate_source() {
    let m = mesh(2);
    let x = dist(&[0.0; 4], &m, R);
    let (grad, comms) = through_redistribute(x, &[S0], dist(&[1.0, 2.0, 3.0, 4.0], &m, S0));
    assert_eq!(comms, vec!["all_gather"]);
    assert_eq!(grad.placements, vec![R]);
    assert_eq!(floats(&grad.locals[0]), vec![1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn op_gradients_flow_through_the_sharding_rules_and_accumulate() {
    // y = (x · w) summed, with x used twice (x · w + x): dy/dx = w + 1, dy/dw = x. x S(0), w R.
    let m = mesh(2);
    let mut ctx = Ctx::new(RuleSet::Torch214);
    let mut tape = Tape::new(&m);
    let xs = [1.0, 2.0, 3.0, 4.0];
    let ws = [0.5, -1.0, 2.0, 3.0];
    let x = tape.leaf(Val::D(dist(&xs, &m, S0)), true);
    let w = tape.leaf(Val::D(dist(&ws, &m, R)), true);
    let xw = tape.op1(&mut ctx, Op::Mul, &[x, w]).unwrap();
    let y = tape.op1(&mut ctx, Op::Add, &[xw, x]).unwrap();
    let yd = tape.val(y).dtensor().clone();
    let ones = DTensor::distribute(&Tensor::ones([4], (Kind::Float, tch::Device::Cpu)), &m, &yd.placements).unwrap();
    let grads = tape.backward(&mut ctx, vec![(y, Val::D(ones))]).unwrap();
    let gx = grads[&x].val.dtensor();
    let gw = grads[&w].val.dtensor();
    assert_eq!(gx.placements, vec![S0]);
    assert_eq!(floats(&gx.full_tensor().unwrap()), ws.iter().map(|&w| w as f64 + 1.0).collect::<Vec<f64>>());
    // w is replicated and multiplied by a shard: its gradient comes back sharded, unreduced.
    assert_eq!(gw.placements, vec![S0]);
    assert_eq!(floats(&gw.full_tensor().unwrap()), xs.iter().map(|&x| x as f64).collect::<Vec<f64>>());
}
