//! The communication log of the spmd_types backend at tt-0.3.0, as rank 0 runs it: every
//! collective of the forward, the backward and the load-balance hook, in order, with its mesh
//! axis and the bytes of the tensor rank 0 hands to it (the input buffer, as the real run's
//! `c10d` calls see it).
//!
//! Where they come from (the sharding config applied by one single-axis redistribute per axis
//! whose type changes, the token dispatcher's three all-to-alls, the hook):
//!
//! - EP off: the MoE entry's S(1) -> R over tp (SP: all-gather of the rank's chunk; SP off:
//!   I -> R, no communication forward, an all-reduce of x's gradient backward); the routed and
//!   the shared experts' partial outputs reduce-scattered to S(1) each (SP) or summed and
//!   all-reduced P -> I once at the exit (SP off).
//! - EP on: the router's and the experts' I -> S(1) (SP off: a chunk forward, an all-gather
//!   backward each); the counts, dispatch and combine all-to-alls on the sparse mesh's ep axis;
//!   the shared experts' entry (SP: all-gather; SP off: I -> R) and exit (SP: reduce-scatter);
//!   SP off: the routed output's S(1) -> P zero-fill and the exit's all-reduce.
//! - The hook: the counts all-reduced over tp ([`crate::spmd_backend::hook_reduces_counts_over_tp`])
//!   and over the loss mesh (dp · cp > 1).
//!
//! The backward runs the adjoints in autograd's order (the shared experts' path first, it ran
//! last). Axes of size 1 run nothing.

use crate::error::Fail;
use crate::kernels;
use crate::sharded::chunk;
use crate::spec::MoeSpec;
use dtensor::DType;
use harness::case::Common;
use harness::run::Inputs;
use tch::{Kind, Tensor};

/// One collective rank 0 runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommEntry {
    /// `forward`, `backward` or `hook`.
    pub phase: &'static str,
    /// `all_reduce`, `all_gather`, `reduce_scatter` or `all_to_all`.
    pub op: &'static str,
    /// The mesh axis: `tp`, `ep` or `loss` (dp · cp flattened).
    pub axis: &'static str,
    pub bytes: usize,
}

fn entry(phase: &'static str, op: &'static str, axis: &'static str, bytes: usize) -> CommEntry {
    CommEntry { phase, op, axis, bytes }
}

/// Rank `r`'s tokens under EP (its tp chunk of its block) routed: its counts per expert.
fn rank_counts(sp: &MoeSpec, c: &Common, inputs: &Inputs, r: usize) -> Result<Vec<i64>, Fail> {
    let (dp, cp, tp) = MoeSpec::axes(c);
    let d = sp.dims;
    let bi = r / tp;
    let (rows, seq) = (chunk(d.batch, dp, bi / cp), chunk(d.seq, cp, bi % cp));
    let piece = chunk(seq.1, tp, r % tp);
    let x = inputs.req("x").narrow(0, rows.0 as i64, rows.1 as i64).narrow(1, (seq.0 + piece.0) as i64, piece.1 as i64);
    let cfg = sp.router_config().map_err(|m| Fail::new(crate::error::Stage::Forward, "ValueError", m))?;
    let bias = sp.load_balance_coeff.map(|_| match inputs.get("expert_bias") {
        Some(b) => b.to_kind(Kind::Float),
        None => Tensor::zeros([d.experts as i64], (Kind::Float, x.device())),
    });
    let routed = tch::no_grad(|| kernels::route(&cfg, &x, inputs.req("gate"), bias.as_ref()))?;
    Ok(Vec::<i64>::try_from(&kernels::counts(&routed.ids, d.experts)).expect("int counts"))
}

/// The log of a case the layer runs (call it only for cases that run).
pub fn comm_log(sp: &MoeSpec, c: &Common, inputs: &Inputs) -> Result<Vec<CommEntry>, Fail> {
    let (dp, cp, tp) = MoeSpec::axes(c);
    let d = sp.dims;
    let elt = if c.dtype == DType::BF16 { 2 } else { 4 };
    let (b0, l0) = (chunk(d.batch, dp, 0).1, chunk(d.seq, cp, 0).1);
    let full = b0 * l0 * d.model * elt;
    let local = b0 * chunk(l0, tp, 0).1 * d.model * elt;
    let (ep_on, sp_on, has_tp, shared) = (sp.parallel.ep > 1, sp.parallel.sp, tp > 1, d.shared_hidden.is_some());
    let (mut fwd, mut bwd) = (Vec::new(), Vec::new());
    let tp_op = |v: &mut Vec<CommEntry>, phase, op, bytes| {
        if has_tp {
            v.push(entry(phase, op, "tp", bytes));
        }
    };
    if ep_on {
        let ep = sp.parallel.ep;
        let per = d.experts / ep;
        let counts: Vec<Vec<i64>> = (0..ep).map(|r| rank_counts(sp, c, inputs, r)).collect::<Result<_, _>>()?;
        let sent: i64 = counts[0].iter().sum();
        let got: i64 = counts.iter().map(|cs| cs[..per].iter().sum::<i64>()).sum();
        let row = (d.model * elt) as i64;
        fwd.push(entry("forward", "all_to_all", "ep", d.experts * 8));
        fwd.push(entry("forward", "all_to_all", "ep", (sent * row) as usize));
        fwd.push(entry("forward", "all_to_all", "ep", (got * row) as usize));
        if sp_on && shared {
            tp_op(&mut fwd, "forward", "all_gather", local);
            tp_op(&mut fwd, "forward", "reduce_scatter", full);
            tp_op(&mut bwd, "backward", "all_gather", local);
            tp_op(&mut bwd, "backward", "reduce_scatter", full);
        }
        if !sp_on {
            tp_op(&mut fwd, "forward", "all_reduce", full);
            if shared {
                tp_op(&mut bwd, "backward", "all_reduce", full);
            }
        }
        bwd.push(entry("backward", "all_to_all", "ep", (sent * row) as usize));
        bwd.push(entry("backward", "all_to_all", "ep", (got * row) as usize));
        if !sp_on {
            tp_op(&mut bwd, "backward", "all_gather", local);
            tp_op(&mut bwd, "backward", "all_gather", local);
        }
    } else if sp_on {
        tp_op(&mut fwd, "forward", "all_gather", local);
        tp_op(&mut fwd, "forward", "reduce_scatter", full);
        if shared {
            tp_op(&mut fwd, "forward", "reduce_scatter", full);
            tp_op(&mut bwd, "backward", "all_gather", local);
        }
        tp_op(&mut bwd, "backward", "all_gather", local);
        tp_op(&mut bwd, "backward", "reduce_scatter", full);
    } else {
        tp_op(&mut fwd, "forward", "all_reduce", full);
        tp_op(&mut bwd, "backward", "all_reduce", full);
    }
    let mut log = fwd;
    if sp.backward {
        log.extend(bwd);
    }
    if sp.load_balance_coeff.is_some() {
        let bytes = d.experts * 4;
        if crate::spmd_backend::hook_reduces_counts_over_tp(sp.revision, sp.backend, sp.parallel.ep, tp) {
            log.push(entry("hook", "all_reduce", "tp", bytes));
        }
        if dp * cp > 1 {
            log.push(entry("hook", "all_reduce", "loss", bytes));
        }
    }
    Ok(log)
}
