//! The MoE layer's comm log and its oracle (spmd_types backend).
//!
//! [`records`] hands the runtime's log to the harness ([`harness::run::Run::comms`]): one
//! [`CommRecord`] per collective with its phase (`forward`, `backward`, `hook`) as `tensor`, its
//! group as `axis` (`tp`; `ep` of the sparse mesh; `loss` = dp·cp flattened) and `mesh_dim` the
//! group's dim on the mesh it ran on (tp and ep 2, loss 0), and the bytes one rank receives (the
//! largest over ranks).
//!
//! [`derive`] says which collectives the layer must issue, from the case's configuration and
//! the routing counts alone (each rank's `tokens_per_expert`, which decide the all-to-alls'
//! uneven splits), not from the code that runs the layer:
//!
//! - EP off, tp > 1: with SP the entry all-gathers x's sequence on tp and the exit
//!   reduce-scatters the routed and (when present) the shared experts' partial sums back;
//!   without SP the exit all-reduces their sum. Backward: each reduce-scatter's all-gather, the
//!   entry gather's reduce-scatter (SP), or the all-reduce of x's replicated copy's gradient.
//! - EP on: on ep, the all-to-all of the counts (E int64 per rank), the rows to their experts'
//!   ranks (uneven: a rank sends its rows of each member's experts) and the rows back; the
//!   backward runs the two row exchanges reversed. On tp (> 1), with SP and shared experts the
//!   shared experts' gather and reduce-scatter (backward: reduce-scatter and gather); without SP
//!   the exit's all-reduce, and backward the gathers of the two tp chunks of x (the router's and
//!   the dispatcher's) and, with shared experts, the all-reduce of their replicated input.
//! - The load-balance hook: the counts (E float32) all-reduced over tp when they are partial
//!   there (EP on, tp > 1: each tp rank routed its own chunk; torchtitan #4154) and over the
//!   loss mesh when dp·cp > 1.
//!
//! [`check`] holds the run's log to it with the harness's multiset match, phase by phase
//! ([`harness::oracle::comm::check_log`]). The DTensor backends' layer runs its collectives as
//! plain per-rank tensor math and logs none, so the oracle covers spmd_types only.

use crate::sharded::chunk;
use crate::spec::MoeSpec;
use crate::spmd_layer::Ran;
use crate::Backend;
use dtensor::CommRecord;
use harness::case::Common;
use harness::oracle::Judgement;
use harness::run::Run;
use tch::Kind;

/// Where the derivation comes from, for verdict details.
pub const SOURCE: &str = "the MoE layer's sharding config";

/// The group's dim on the mesh it runs on: dense (dp, cp, tp), sparse (dp_replicate, efsdp,
/// ep), the hook's (loss, tp) with loss standing for dp·cp.
fn mesh_dim(axis: &str) -> usize {
    match axis {
        "dp" | "dp_replicate" | "loss" => 0,
        "cp" | "efsdp" => 1,
        _ => 2,
    }
}

/// The runtime's log as the harness's records.
pub fn records(ran: &Ran) -> Vec<CommRecord> {
    let log = ran.spmd.comms();
    crate::spmd_layer::log_of(ran)
        .into_iter()
        .zip(log)
        .map(|(e, c)| CommRecord {
            op: e.op.into(),
            mesh_dim: mesh_dim(&e.axis),
            tensor: e.phase.into(),
            bytes: c.bytes,
            axis: Some(e.axis),
        })
        .collect()
}

/// One collective the layer must issue: bytes each rank hands in and receives, by global rank
/// of the dense mesh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Want {
    pub phase: &'static str,
    pub op: &'static str,
    pub axis: &'static str,
    pub sent: Vec<usize>,
    pub recv: Vec<usize>,
}

impl Want {
    /// As the harness records it: the bytes one rank receives, the largest over ranks.
    pub fn record(&self) -> CommRecord {
        CommRecord {
            op: self.op.into(),
            mesh_dim: mesh_dim(self.axis),
            tensor: self.phase.into(),
            bytes: self.recv.iter().copied().max().unwrap_or(0),
            axis: Some(self.axis.into()),
        }
    }
}

/// The sizes the derivation needs, per rank of the dense mesh.
struct Shape {
    ranks: usize,
    /// A row of x's block (one token) in bytes.
    row: usize,
    /// Rows of the rank's block: batch rows times its cp chunk of the sequence.
    block: Vec<usize>,
    /// The rank's tp chunk of its block.
    piece: Vec<usize>,
    /// The block's share a reduce-scatter leaves one rank (the output buffer: block / tp).
    scattered: Vec<usize>,
}

impl Shape {
    fn new(s: &MoeSpec, c: &Common) -> Shape {
        let (dp, cp, tp) = MoeSpec::axes(c);
        let d = s.dims;
        let es = c.dtype.itemsize();
        let ranks = dp * cp * tp;
        let (mut block, mut piece, mut scattered) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..ranks {
            let bi = r / tp;
            let rows = chunk(d.batch, dp, bi / cp).1;
            let seq = chunk(d.seq, cp, bi % cp).1;
            block.push(rows * seq);
            piece.push(rows * chunk(seq, tp, r % tp).1);
            scattered.push(rows * (seq / tp));
        }
        Shape { ranks, row: d.model * es, block, piece, scattered }
    }

    fn bytes(&self, rows: &[usize]) -> Vec<usize> {
        rows.iter().map(|n| n * self.row).collect()
    }
}

/// The collectives the layer must issue, in order within each phase; `counts[r]` is rank r's
/// routing counts per expert (its `tokens_per_expert` before the hook).
pub fn derive(s: &MoeSpec, c: &Common, counts: &[Vec<i64>]) -> Vec<Want> {
    let (dp, cp, tp) = MoeSpec::axes(c);
    let sh = Shape::new(s, c);
    let (sp, shared, ep) = (s.parallel.sp, s.dims.shared_hidden.is_some(), s.parallel.ep);
    let mut out = Vec::new();
    let mut push = |phase, op, axis, sent: Vec<usize>, recv: Vec<usize>| {
        out.push(Want { phase, op, axis, sent, recv });
    };
    let (block, piece, scattered) = (sh.bytes(&sh.block), sh.bytes(&sh.piece), sh.bytes(&sh.scattered));
    let tp_on = tp > 1;
    let gather = |p: &mut dyn FnMut(&'static str, &'static str, &'static str, Vec<usize>, Vec<usize>), ph| {
        p(ph, "all_gather", "tp", piece.clone(), block.clone())
    };
    let rs = |p: &mut dyn FnMut(&'static str, &'static str, &'static str, Vec<usize>, Vec<usize>), ph| {
        p(ph, "reduce_scatter", "tp", block.clone(), scattered.clone())
    };
    let reduce = |p: &mut dyn FnMut(&'static str, &'static str, &'static str, Vec<usize>, Vec<usize>), ph| {
        p(ph, "all_reduce", "tp", block.clone(), block.clone())
    };
    let (fw, bw) = ("forward", "backward");
    if ep == 1 {
        if tp_on && sp {
            gather(&mut push, fw);
            rs(&mut push, fw);
            if shared {
                rs(&mut push, fw);
            }
        } else if tp_on {
            reduce(&mut push, fw);
        }
        if tp_on && s.backward && sp {
            gather(&mut push, bw);
            if shared {
                gather(&mut push, bw);
            }
            rs(&mut push, bw);
        } else if tp_on && s.backward {
            reduce(&mut push, bw);
        }
    } else {
        let (to, back) = exchanges(&sh, ep, s.dims.experts, counts);
        let e8 = vec![s.dims.experts * 8; sh.ranks];
        push(fw, "all_to_all", "ep", e8.clone(), e8);
        push(fw, "all_to_all", "ep", to.0.clone(), to.1.clone());
        push(fw, "all_to_all", "ep", back.0.clone(), back.1.clone());
        if tp_on && sp && shared {
            gather(&mut push, fw);
            rs(&mut push, fw);
        } else if tp_on && !sp {
            reduce(&mut push, fw);
        }
        if s.backward {
            if tp_on && sp && shared {
                gather(&mut push, bw);
                rs(&mut push, bw);
            } else if tp_on && shared {
                reduce(&mut push, bw);
            }
            push(bw, "all_to_all", "ep", back.1.clone(), back.0.clone());
            push(bw, "all_to_all", "ep", to.1.clone(), to.0.clone());
            if tp_on && !sp {
                gather(&mut push, bw);
                gather(&mut push, bw);
            }
        }
    }
    if s.load_balance_coeff.is_some() {
        let e4 = vec![s.dims.experts * 4; sh.ranks];
        if ep > 1 && tp_on {
            push("hook", "all_reduce", "tp", e4.clone(), e4.clone());
        }
        if dp * cp > 1 {
            push("hook", "all_reduce", "loss", e4.clone(), e4);
        }
    }
    out
}

type Bytes = (Vec<usize>, Vec<usize>);

/// The dispatch's row exchanges on ep (groups of `ep` consecutive ranks): each rank sends the
/// rows routed to member j's experts to member j. Returns (sent, received) bytes per rank of
/// the rows' way out and of their way back.
fn exchanges(sh: &Shape, ep: usize, experts: usize, counts: &[Vec<i64>]) -> (Bytes, Bytes) {
    let e = experts / ep;
    let send: Vec<Vec<usize>> = (0..sh.ranks)
        .map(|r| (0..ep).map(|j| counts[r][j * e..(j + 1) * e].iter().sum::<i64>().max(0) as usize).collect())
        .collect();
    let mine: Vec<usize> = send.iter().map(|v| v.iter().sum()).collect();
    let theirs: Vec<usize> = (0..sh.ranks).map(|r| (0..ep).map(|m| send[r / ep * ep + m][r % ep]).sum()).collect();
    let (mine, theirs) = (sh.bytes(&mine), sh.bytes(&theirs));
    ((mine.clone(), theirs.clone()), (theirs, mine))
}

/// Each rank's routing counts as the run's `tokens_per_expert` output holds them.
pub fn counts_of(run: &Run) -> Option<Vec<Vec<i64>>> {
    let t = run.sharded.as_ref().ok()?.get("tokens_per_expert")?;
    Some(
        t.locals
            .iter()
            .map(|l| {
                Vec::<f64>::try_from(&l.to_kind(Kind::Double))
                    .map_or_else(|_| Vec::new(), |v| v.iter().map(|x| x.round() as i64).collect())
            })
            .collect(),
    )
}

/// The comm oracle: the run's log against [`derive`]'s (spmd_types runs that ran).
pub fn judge(s: &MoeSpec, c: &Common, run: &Run, j: &mut Judgement) {
    if s.backend != Backend::SpmdTypes {
        return;
    }
    let Some(counts) = counts_of(run) else { return };
    check(s, c, &counts, &run.comms, j);
}

/// [`judge`] on a log and counts.
pub fn check(s: &MoeSpec, c: &Common, counts: &[Vec<i64>], log: &[CommRecord], j: &mut Judgement) {
    let want: Vec<CommRecord> = derive(s, c, counts).iter().map(Want::record).collect();
    harness::oracle::comm::check_log(&want, log, SOURCE, j);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spmd_layer::{run_mutant, Mutant};
    use harness::case::Case;
    use tch::Device;

    fn case(edit: &[(&str, &str)]) -> Case<MoeSpec> {
        // hidden 16: the grouped GEMM wants 16-byte strides in each tp shard.
        let mut text =
            crate::tests::CASE.replace("partial_dtensor", "spmd_types").replace("\"hidden\": 8", "\"hidden\": 16");
        for (a, b) in edit {
            text = text.replace(a, b);
        }
        Case::from_json(&text).expect("a case")
    }

    /// The comm oracle's verdicts on a run of `c` (with a [`Mutant`] program).
    fn keys(c: &Case<MoeSpec>, m: Option<Mutant>) -> Vec<String> {
        let inputs = harness::data::inputs(c, Device::Cpu);
        let (out, ran) = run_mutant(&c.subject, &c.common, &inputs, m).expect("runs");
        let counts: Vec<Vec<i64>> = out
            .get("tokens_per_expert")
            .expect("counts")
            .locals
            .iter()
            .map(|t| {
                Vec::<f64>::try_from(&t.to_kind(Kind::Double)).expect("floats").iter().map(|x| *x as i64).collect()
            })
            .collect();
        let mut j = Judgement::default();
        check(&c.subject, &c.common, &counts, &records(&ran), &mut j);
        j.verdicts.iter().map(|v| format!("{}:{}", v.class, v.key)).collect()
    }

    #[test]
    fn the_layer_issues_what_its_config_derives() {
        // EP on and off, SP on and off, with and without shared experts, dp = 2.
        for ep in ["1", "2"] {
            for sp in ["true", "false"] {
                for shared in ["8", "null"] {
                    let c = case(&[
                        ("\"ep\": 2", &format!("\"ep\": {ep}")),
                        ("\"sp\": true", &format!("\"sp\": {sp}")),
                        ("\"shared_hidden\": 8", &format!("\"shared_hidden\": {shared}")),
                        ("[1, 1, 2]", "[2, 1, 2]"),
                        ("\"batch\": 1", "\"batch\": 2"),
                    ]);
                    assert_eq!(keys(&c, None), Vec::<String>::new(), "ep {ep} sp {sp} shared {shared}");
                }
            }
        }
    }

    #[test]
    fn a_hook_without_the_tp_reduction_is_a_comm_verdict() {
        // tt-pre4154 under spmd_types: EP on, tp = 2, the counts are partial over tp and the
        // hook reduces only the loss mesh.
        let c = case(&[("tt-0.3.0", "tt-pre4154")]);
        assert_eq!(keys(&c, None), ["comm:hook:all_reduce@tp->-"]);
        assert!(keys(&case(&[("tt-0.3.0", "tt-4154")]), None).is_empty());
    }

    #[test]
    fn an_entry_without_its_conversion_is_a_comm_verdict() {
        // SP off, EP off: leaving x I on tp skips the I -> R convert, whose backward is the
        // all-reduce of x's gradient over tp (the checker is off, so the program runs).
        let c = case(&[("\"ep\": 2", "\"ep\": 1"), ("\"sp\": true", "\"sp\": false")]);
        assert!(keys(&c, None).is_empty());
        assert_eq!(keys(&c, Some(Mutant::EntryKeepsInvariant)), ["comm:backward:all_reduce@tp->-"]);
    }
}
