//! The boundary programs: the router's forward as each torchtitan revision wrote the crossings
//! between local tensors and DTensors, recorded on the simulated DTensor's autograd tape, then
//! the backward of the loss (`loss.rs`). docs/backward.md has the table this follows.

use super::loss::{self, LossClass, UNEVEN_SPLIT};
use super::{BackwardSpec, Boundary};
use crate::body::{self, Recorded, Site};
use crate::RouterConfig;
use dtensor::autograd::{expect, Grad, Id, Tape, Val};
use dtensor::redistribute::redistribute;
use dtensor::{CommRecord, Ctx, DTensor, DTensorError, Op, Result, RuleSet};
use placement::{layout, Mesh, Placement, ReduceOp};
use std::sync::Arc;
use tch::Tensor;

const R: Placement = Placement::Replicate;
const P: Placement = Placement::Partial(ReduceOp::Sum);

/// The full tensors a program starts from (the case's inputs).
pub struct Weights<'a> {
    pub x: &'a Tensor,
    pub gate: &'a Tensor,
    pub gate_bias: Option<&'a Tensor>,
    pub expert_bias: Option<&'a Tensor>,
}

/// What a program did: the leaves' gradients, the ids it chose (full, (T, K)), its loss class,
/// and the collectives of its backward.
pub struct ProgramRun {
    /// `gate.weight`, `gate.bias` (with a gate bias), `x`, with the boundaries each crossed.
    pub grads: Vec<(&'static str, Grad)>,
    pub ids: Tensor,
    pub class: LossClass,
    pub comms: Vec<CommRecord>,
    /// The backward derived on placements apart from the autograd that ran it
    /// (`dtensor::autograd::expect`): each gradient's placements by name and the collectives;
    /// `None` where the derivation itself raised.
    pub expected: Option<Derived>,
}

/// The derived backward: placements by gradient name, and the collectives.
pub type Derived = (Vec<(&'static str, Vec<Placement>)>, Vec<CommRecord>);

/// The leaves and the fixed parts of one program.
struct Prog<'a> {
    ctx: Ctx,
    tape: Tape,
    cfg: &'a RouterConfig,
    spec: &'a BackwardSpec,
    site: Site,
    x: Id,
    w: Id,
    b: Option<Id>,
    expert_bias: Option<&'a Tensor>,
}

/// Runs `spec`'s program for a router `cfg` on `mesh` (1-D, the TP axis) under `rules`; `site`
/// is how the revision writes the group-mask scatter.
pub fn run(
    cfg: &RouterConfig,
    spec: &BackwardSpec,
    site: Site,
    rules: RuleSet,
    mesh: &Arc<Mesh>,
    w: &Weights,
) -> Result<ProgramRun> {
    let mut ctx = Ctx::new(rules);
    let mut tape = Tape::new(mesh);
    // Leaves carry their gradient's name, for the labels of the backward's collectives.
    tape.name(&mut ctx, "x");
    let x = tape.leaf(Val::D(DTensor::distribute(w.x, mesh, &[spec.moe_input()])?), true);
    tape.name(&mut ctx, "gate.weight");
    let wd = tape.leaf(Val::D(DTensor::distribute(w.gate, mesh, &[R])?), true);
    tape.name(&mut ctx, "gate.bias");
    let b = match w.gate_bias {
        Some(b) => Some(tape.leaf(Val::D(DTensor::distribute(b, mesh, &[R])?), true)),
        None => None,
    };
    tape.name(&mut ctx, "scores");
    let mut p = Prog { ctx, tape, cfg, spec, site, x, w: wd, b, expert_bias: w.expert_bias };
    let (ts, ids, tok) = match spec.boundary {
        _ if spec.boundary.local_router(spec.ep) => p.local_router()?,
        Boundary::T3192 => p.sequence_parallel_gate()?,
        _ => p.dtensor_router()?,
    };
    p.backward(ts, ids, tok)
}

impl Prog<'_> {
    fn ex(&mut self) -> Recorded<'_> {
        Recorded { ctx: &mut self.ctx, tape: &mut self.tape }
    }

    /// Routes from the logits: on local tensors with a plain per-rank expert bias, or on
    /// DTensors with a replicated one. Returns (gate values, ids).
    fn route(&mut self, logits: Id, local: bool) -> Result<(Id, Id)> {
        let bias = match self.expert_bias {
            Some(eb) if local => {
                let copies = (0..self.tape.mesh().size()).map(|_| eb.shallow_clone()).collect();
                Some(self.tape.leaf(Val::L(copies), false))
            }
            Some(eb) => Some(self.tape.leaf(Val::D(DTensor::distribute(eb, self.tape.mesh(), &[R])?), false)),
            None => None,
        };
        let (cfg, site) = (self.cfg, self.site);
        let mut ex = self.ex();
        let scores = body::score(&mut ex, &logits, cfg)?;
        let (ids, _) = body::choose(&mut ex, &scores, bias.as_ref(), cfg, site)?;
        let ts = body::gate_values(&mut ex, &scores, &ids, cfg)?;
        Ok((ts, ids))
    }

    fn linear(&mut self, x: Id) -> Result<Id> {
        let (w, b) = (self.w, self.b);
        body::linear(&mut self.ex(), &x, &w, b.as_ref())
    }

    /// tt-pre2416, tt-pr2388, tt-2416 and tt-3192 without EP: the router on local tensors.
    fn local_router(&mut self) -> Result<(Id, Id, Vec<Vec<i64>>)> {
        let (bnd, d) = (self.spec.boundary, self.tape.val(self.x).shape());
        let flat = Op::View { shape: vec![(d[0] * d[1]) as i64, d[2] as i64], unsafe_view: false };
        let x = self.tape.redistribute(&mut self.ctx, self.x, &[R], "moe.input")?;
        let logits = if bnd == Boundary::T3192 {
            let xv = self.tape.op1(&mut self.ctx, flat, &[x])?;
            self.linear(xv)?
        } else {
            let label = (bnd == Boundary::T2416).then(|| vec![P]);
            let xl = self.tape.to_local(x, label, "moe.to_local");
            let xl = self.tape.op1(&mut self.ctx, flat, &[xl])?;
            let xg = self.tape.from_local(xl, &[R], None, "gate.from_local")?;
            self.linear(xg)?
        };
        let label = (bnd != Boundary::Pre2416).then(|| vec![P]);
        let sl = self.tape.to_local(logits, label, "gate.to_local");
        let (ts, ids) = self.route(sl, true)?;
        let t = (d[0] * d[1]) as i64;
        let n = self.tape.mesh().size();
        if loss::class(self.spec, n) == LossClass::Tokensplit && t % n as i64 != 0 {
            return Err(DTensorError::Local { kind: "ValueError", message: UNEVEN_SPLIT.into() });
        }
        Ok((ts, ids, vec![(0..t).collect(); n]))
    }

    /// tt-3192 with EP: the flattened tokens go through the gate's SequenceParallel style
    /// (redistributed to `S(0)` when they are not), the router on DTensors, the experts take
    /// the gate values with `to_local()`.
    fn sequence_parallel_gate(&mut self) -> Result<(Id, Id, Vec<Vec<i64>>)> {
        let d = self.tape.val(self.x).shape();
        let flat = Op::View { shape: vec![(d[0] * d[1]) as i64, d[2] as i64], unsafe_view: false };
        let mut xv = self.tape.op1(&mut self.ctx, flat, &[self.x])?;
        if self.tape.val(xv).dtensor().placements != [Placement::Shard(0)] {
            xv = self.tape.redistribute(&mut self.ctx, xv, &[Placement::Shard(0)], "gate.input")?;
        }
        let logits = self.linear(xv)?;
        let (ts, ids) = self.route(logits, false)?;
        let tok = self.tokens(ts, &[d[0] * d[1]]);
        let ts_l = self.tape.to_local(ts, None, "experts.to_local");
        Ok((ts_l, ids, tok))
    }

    /// tt-clean and tt-3654: the router on DTensors, its outputs redistributed to the experts'
    /// input layout, then the experts' local_map labels the gate values' gradient.
    fn dtensor_router(&mut self) -> Result<(Id, Id, Vec<Vec<i64>>)> {
        let ep = self.spec.ep;
        let dst = if ep { Placement::Shard(1) } else { R };
        let x = self.tape.redistribute(&mut self.ctx, self.x, &[dst], "router.input")?;
        let logits = self.linear(x)?;
        let (mut ts, ids) = self.route(logits, false)?;
        self.tape.name(&mut self.ctx, "experts.input");
        if self.tape.val(ts).dtensor().placements != [dst] {
            ts = self.tape.redistribute(&mut self.ctx, ts, &[dst], "experts.input")?;
        }
        let ids_d = self.tape.val(ids).dtensor().clone();
        let ids = if ids_d.placements != [dst] {
            self.tape.leaf(Val::D(redistribute(&mut self.ctx, &ids_d, &[dst])?), false)
        } else {
            ids
        };
        let label = match (ep, self.spec.boundary) {
            (true, _) => Some(vec![dst]),
            (false, Boundary::Clean) => Some(vec![P]),
            (false, _) => None,
        };
        let d = self.tape.val(self.x).shape();
        let tok = self.tokens(ts, &[d[0], d[1]]);
        let ts_l = self.tape.to_local(ts, label, "experts.local_map");
        Ok((ts_l, ids, tok))
    }

    /// The global token index (b·L + l) of every local row of `v` on each rank, whose leading
    /// dims are the token dims `tokens` ((T,) or (B, L)).
    fn tokens(&self, v: Id, tokens: &[usize]) -> Vec<Vec<i64>> {
        let d = self.tape.val(v).dtensor();
        let mesh = self.tape.mesh();
        (0..mesh.size())
            .map(|r| {
                let idx = layout::local_indices(&d.shape, mesh, &d.placements, &mesh.coord(r));
                match tokens {
                    [_] => idx[0].iter().map(|&t| t as i64).collect(),
                    _ => idx[0].iter().flat_map(|&b| idx[1].iter().map(move |&l| (b * tokens[1] + l) as i64)).collect(),
                }
            })
            .collect()
    }

    /// Seeds each rank's local gate values with its loss gradient and runs the backward.
    fn backward(self, ts: Id, ids: Id, tok: Vec<Vec<i64>>) -> Result<ProgramRun> {
        let n = self.tape.mesh().size();
        let class = loss::class(self.spec, n);
        let (t, e) = (tok_count(&self.tape, self.x), self.cfg.experts);
        let ids_v = self.tape.val(ids).clone();
        let seeds: Vec<Tensor> = (0..n)
            .map(|r| {
                let wr = loss::rank_weights(self.spec.loss_seed, t, e, n, class, r);
                loss::seed(&wr, e, &tok[r], &ids_v.locals()[r])
            })
            .collect();
        let full_ids = match &ids_v {
            Val::D(d) => d.full_tensor()?,
            Val::L(v) => v[0].shallow_clone(),
        };
        let mut bctx = Ctx::new(self.ctx.rules);
        let mut grads = self.tape.backward(&mut bctx, vec![(ts, Val::L(seeds))])?;
        let mut out = vec![("gate.weight", self.w)];
        out.extend(self.b.map(|b| ("gate.bias", b)));
        out.push(("x", self.x));
        let expected = expect::expected(&self.tape, self.ctx.rules, &[(ts, None)]).ok().map(|e| {
            let ps = out.iter().filter_map(|&(name, id)| e.grads.get(&id).cloned().flatten().map(|p| (name, p)));
            (ps.collect(), e.comms)
        });
        let grads = out.into_iter().filter_map(|(name, id)| grads.remove(&id).map(|g| (name, g))).collect();
        Ok(ProgramRun { grads, ids: full_ids, class, comms: bctx.comms, expected })
    }
}

fn tok_count(tape: &Tape, x: Id) -> usize {
    let d = tape.val(x).shape();
    d[0] * d[1]
}
