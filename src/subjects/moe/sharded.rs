//! The sharded run: torchtitan's MoE layer (0.3.0, and the older revisions as the few facts of
//! [`crate::revision`]) on every rank of the dense mesh (dp, cp, tp), each rank running the
//! layer's per-rank tensor code ([`kernels`]) on its own pieces, with the collectives of the
//! partial_dtensor backend between them (docs/moe-layer.md, docs/moe-revisions.md §3.11):
//!
//! - EP off: the MoE entry gathers the sequence over tp (SP on) or keeps the block (SP off); the
//!   router runs on the whole block, replicated over tp; the experts and the shared experts are
//!   sharded on their hidden dims over tp and give partial sums; the exit reduce-scatters (SP on)
//!   or all-reduces (SP off).
//! - EP on: the router runs on this rank's tp chunk of the sequence; rows travel to the rank that
//!   owns their expert (an uneven all-to-all on the sparse mesh's ep axis), are permuted to expert
//!   order, run through the local experts and travel back; the routed output is sequence-sharded,
//!   zero-filled to a partial sum when SP is off. Before #3996 the combine writes into a token
//!   buffer of the whole tp group instead ([`crate::combine`]), a partial sum over tp.
//! - Without EP at `tt-3654` each tp rank routes its own copy of x: the gradients of x and the
//!   gate stay per-rank shares, as the Replicate label on them leaves them.
//! - `tt-0.2.2` (torchtitan 0.2.2's DTensor module hooks) runs the `tt-3386` flat split with the
//!   router's counts taken over the whole block, and the backward of #2387: each tp rank's
//!   router (and, under EP, its rows) read the rank's own copy of x, so what the rank computes
//!   for x and the gate stays on the rank ([`crate::MoeRev::reduces_router_grads`]).
//!
//! All ranks live in one process, so one libtorch autograd graph spans them: a collective is the
//! tensor op that moves the data (a sum, a concatenation, a row selection), and its backward is
//! the collective's own adjoint. For a correct program (0.3.0 labels every gradient rightly) that
//! is what the real ranks compute. Each parameter is one leaf per rank holding the rank's shard,
//! so its gradient is that rank's local gradient (the DTensor placement of the outputs says how
//! the pieces add up: Partial over dp and cp, where FSDP would reduce).
//!
//! Cases the simulator does not model yet come back as a "NotModelled" failure: other backends
//! and revisions, and EP on with a tp chunk of the sequence that is empty or uneven (the real
//! layer fails there in several ways, docs/moe-layer.md §4.4).

use crate::combine::{self as buffer_combine, Geometry};
use crate::error::{Fail, Stage};
use crate::kernels;
use crate::reference::grad_of;
use crate::revision::{Backend, Combine, SeqCheck};
use crate::spec::MoeSpec;
use dtensor::DTensor;
use harness::case::Common;
use harness::run::Inputs;
use harness::run::Named;
use placement::{Mesh, Placement, ReduceOp};
use std::sync::Arc;
use tch::{Kind, Tensor};

const R: Placement = Placement::Replicate;
const P: Placement = Placement::Partial(ReduceOp::Sum);
const fn s(d: i64) -> Placement {
    Placement::Shard(d)
}

/// torch.chunk's piece `i` of `len` split `n` ways: (start, size); empty past the last chunk.
pub fn chunk(len: usize, n: usize, i: usize) -> (usize, usize) {
    let c = len.div_ceil(n.max(1));
    let start = (i * c).min(len);
    (start, c.min(len - start))
}

fn narrow(t: &Tensor, dim: i64, (start, size): (usize, usize)) -> Tensor {
    t.narrow(dim, start as i64, size as i64)
}

/// The errors the case raises before the layer runs, in the order the real run meets them: the
/// trainer's sequence check, the MoE constructor's assertion, the mesh, then the forward's own.
pub fn checks(sp: &MoeSpec, c: &Common) -> Result<router::RouterConfig, Fail> {
    config_checks(sp, c)?;
    forward_checks(sp, c)
}

/// The errors met before parallelize: the trainer's sequence check, the MoE constructor's
/// assertion, the mesh; then the configurations not modelled at all.
pub fn config_checks(sp: &MoeSpec, c: &Common) -> Result<(), Fail> {
    let (dp, cp, tp) = MoeSpec::axes(c);
    seq_checks(sp, c)?;
    if sp.load_balance_coeff.is_some_and(|k| k <= 0.0) {
        return Err(Fail::new(Stage::Config, "AssertionError", ""));
    }
    let p = &sp.parallel;
    let world = dp * cp * tp;
    let dense = (dp / p.dp_replicate) * cp * tp;
    let efsdp = dense / p.ep;
    if efsdp * p.ep != dense {
        if sp.revision == crate::MoeRev::Tt022 {
            // 0.2.x builds a five-axis sparse mesh (pp, dp_replicate, efsdp, ep, etp).
            return Err(Fail::not_modelled("tt-0.2.2 with ep not dividing dp_shard·cp·tp (its mesh error)"));
        }
        let prod = p.dp_replicate * efsdp * p.ep;
        return Err(Fail::new(
            Stage::Mesh,
            "ValueError",
            format!(
                "The product of mesh_sizes=(1, {}, {efsdp}, {}) is {prod}, but the original dimension at dim=0 has size {world}. These must be equal for unflatten to work correctly.",
                p.dp_replicate, p.ep
            ),
        ));
    }
    if !sp.backend.modelled() || !sp.revision.modelled() || !sp.revision.models_backend(sp.backend) {
        return Err(Fail::not_modelled(format!("the {} backend at {} is not modelled yet", sp.backend, sp.revision)));
    }
    Ok(())
}

/// The forward's errors met outside the layer's tensor code, in order, and the router's
/// configuration. The spmd_types layer calls this after parallelize and the router's entry
/// (its `IndexError`s come from the `spmd` runtime there), and its runtime raises topk's range
/// error, the dispatcher's view error and the exit's size error itself.
pub fn forward_checks(sp: &MoeSpec, c: &Common) -> Result<router::RouterConfig, Fail> {
    let (dp, cp, tp) = MoeSpec::axes(c);
    let (d, p) = (&sp.dims, &sp.parallel);
    let lens: Vec<usize> = (0..cp).map(|ci| chunk(d.seq, cp, ci).1).collect();
    let spmd = sp.backend == Backend::SpmdTypes;
    crate::full_dtensor::hangs_at_router(sp)?;
    let spmd_exit = spmd && !p.sp;
    // The buffer combines of tt-pre3604 .. tt-3662 take uneven chunks (SP off, none empty);
    // tt-3386's flat split takes any length with SP off.
    let flat = sp.revision.combine() == Combine::Flat;
    let buffered = sp.revision.seq_check() == SeqCheck::Old && !p.sp && (flat || lens.iter().all(|&l| l >= tp));
    if p.ep > 1 && !spmd_exit && !buffered && lens.iter().any(|&l| l < tp || l % tp != 0) {
        // The gate boundary's Replicate -> Shard(1) meets an empty or uneven chunk.
        return Err(Fail::not_modelled("EP on with an empty or uneven tp chunk of the sequence"));
    }
    if p.ep == 1 && sp.parallel.sp && tp > 1 && lens.iter().any(|&l| l % tp != 0) {
        return Err(Fail::not_modelled("sequence parallelism with an uneven tp chunk of the sequence"));
    }
    // The router's forward: group checks, then top-k, then the gather of the override. With
    // tp > 1 the router's tensors are DTensors (DTensor's topk words its range error itself).
    let mut clamped = sp.clone();
    clamped.dims.top_k = d.top_k.min(d.experts);
    if let Err(m) = clamped.router_config() {
        return Err(Fail::new(Stage::Forward, "ValueError", m));
    }
    if d.top_k > d.experts && !spmd {
        // DTensor's topk words its range error itself; partial_dtensor at tp = 1 runs plain
        // tensors (spmd_types: the runtime's topk raises torch's error).
        let dtensor = crate::full_dtensor::router_on_dtensor(sp.backend, dp, cp, tp);
        let msg = if dtensor { "k not in range for dimension" } else { "selected index k out of range" };
        return Err(Fail::new(Stage::Forward, "RuntimeError", msg));
    }
    let mut cfg = clamped.router_config().map_err(|m| Fail::new(Stage::Forward, "ValueError", m))?;
    // The router runs with the case's K (past the experts only on spmd_types, whose topk raises).
    cfg.top_k = d.top_k;
    if sp.router.force_load_balance && crate::full_dtensor::router_on_dtensor(sp.backend, dp, cp, tp) {
        return Err(Fail::new(
            Stage::Forward,
            "RuntimeError",
            "aten.gather.default got mixed torch.Tensor and DTensor, need to convert all torch.Tensor to DTensor before calling distributed operators!",
        ));
    }
    crate::full_dtensor::not_modelled(sp, dp, cp, tp)?;
    let local_batch_one = (0..dp).any(|di| chunk(d.batch, dp, di).1 == 1);
    let one_row_class = p.ep == 1 && p.sp && tp > 1 && local_batch_one && sp.backend == Backend::PartialDtensor;
    if sp.backward && one_row_class && (sp.revision.combine() != Combine::Local || sp.revision.folds_batch()) {
        return Err(Fail::not_modelled(
            "x's gradient with EP off, SP on and one batch row per rank is recorded at tt-0.3.0 only",
        ));
    }
    if sp.backward
        && drops_routed_x_grad(sp, tp, 1)
        && local_batch_one
        && d.shared_hidden.is_some()
        && d.top_k > 1
        && lens.contains(&tp)
    {
        // Recorded once (K = 2, shared experts, one position per tp rank): the backward raises
        // a shape error. Its extent is not known yet.
        return Err(Fail::not_modelled("the backward's shape error with shared experts and one batch row per rank"));
    }
    if p.ep > 1 && !d.experts.is_multiple_of(p.ep) && sp.revision == crate::MoeRev::Tt022 {
        // 0.2.x's ExpertParallel exchanges the E counts (equal splits) before it views them:
        // the functional all_to_all_single refuses E not divisible by ep (checked on 2 gloo
        // ranks, torch 2.14.0).
        return Err(Fail::new(Stage::Forward, "RuntimeError", "Split sizes doesn't match total dim 0 size"));
    }
    if p.ep > 1 && !d.experts.is_multiple_of(p.ep) && !spmd {
        // spmd_types: the dispatcher's view on the runtime raises torch's error.
        return Err(Fail::new(
            Stage::Forward,
            "RuntimeError",
            format!("shape '[{}, -1]' is invalid for input of size {}", p.ep, d.experts),
        ));
    }
    if flat && p.ep > 1 {
        flat_checks(sp, c, &lens)?;
    }
    Ok(cfg)
}

/// `tt-3386` under EP: with SP on, x's flatten at the MoE entry keeps the sequence shard only
/// for one batch row per rank (two or more: torch 2.11's view raises, 2.14's records a
/// `_StridedShard`; not modelled); a (dp, cp) block whose T tp does not divide fails at the exit
/// ([`buffer_combine::flat_exit`]).
fn flat_checks(sp: &MoeSpec, c: &Common, lens: &[usize]) -> Result<(), Fail> {
    let (dp, _, tp) = MoeSpec::axes(c);
    let d = &sp.dims;
    let rows: Vec<usize> = (0..dp).map(|di| chunk(d.batch, dp, di).1).collect();
    if sp.revision == crate::MoeRev::Tt022 {
        // 0.2.x flattens the all-gathered local x (no DTensor flatten); its reorderer hook
        // refuses a flat token count tp does not divide.
        for &b in &rows {
            for &l in lens {
                buffer_combine::uneven_split(b * l, tp)?;
            }
        }
        return Ok(());
    }
    if sp.parallel.sp && tp > 1 && rows.iter().any(|&b| b >= 2) {
        return Err(Fail::not_modelled(
            "tt-3386 with EP and SP on and two or more batch rows per rank (the flatten of a sequence-sharded x)",
        ));
    }
    for &b in &rows {
        for &l in lens {
            buffer_combine::flat_exit(b, l, tp, d.model, d.shared_hidden.is_some())?;
        }
    }
    Ok(())
}

/// The sequence checks of the case's revision (with `trainer_checks`), in the order the real run
/// meets them; from `tt-head` on, HEAD's checks ([`crate::head::checks`]).
fn seq_checks(sp: &MoeSpec, c: &Common) -> Result<(), Fail> {
    if sp.revision.folds_batch() {
        return crate::head::checks(sp, c);
    }
    if !sp.trainer_checks {
        return Ok(());
    }
    let (_, cp, tp) = MoeSpec::axes(c);
    let l = sp.dims.seq;
    match sp.revision.seq_check() {
        // Not reached: `crate::head::checks` above.
        SeqCheck::Tokens => {}
        SeqCheck::Current => {
            let div = sp.seq_divisor(c);
            if !l.is_multiple_of(div) {
                return Err(Fail::new(
                    Stage::Config,
                    "ValueError",
                    format!("Training sequence length ({l}) must be divisible by {div} for the configured sequence/context parallelism."),
                ));
            }
        }
        SeqCheck::Old | SeqCheck::Assert => {
            let old = sp.revision.seq_check() == SeqCheck::Old;
            if old && sp.parallel.sp && tp > 1 && !l.is_multiple_of(tp) {
                return Err(Fail::new(
                    Stage::Config,
                    "ValueError",
                    format!("Training sequence length ({l}) must be divisible by sequence parallel degree ({tp})."),
                ));
            }
            if !l.is_multiple_of(tp * cp * 2) {
                return Err(Fail::new(
                    Stage::Parallelize,
                    "AssertionError",
                    format!("Sequence length {l} must be divisible by the product of TP degree ({tp}) and 2 * CP degree ({cp})."),
                ));
            }
        }
    }
    Ok(())
}

/// One (dp, cp) block: its batch and sequence ranges, its x leaf.
struct Block {
    rows: (usize, usize),
    seq: (usize, usize),
    x: Tensor,
}

/// The dispatch side of one rank under EP: its reordered rows and where each expert's start.
struct Src {
    tok: Tensor,
    ss: Tensor,
    rows: Tensor,
    x_td: Tensor,
    counts: Vec<i64>,
    offs: Vec<i64>,
    shape: (i64, i64),
}

/// One run of the sharded layer: the leaves of every rank and what each rank computed.
struct Prog<'a> {
    sp: &'a MoeSpec,
    inputs: &'a Inputs,
    cfg: router::RouterConfig,
    tp: usize,
    bias: Option<Tensor>,
    blocks: Vec<Block>,
    /// Parameter leaves per rank, by name, in first-use order.
    params: Vec<(&'static str, Vec<Option<Tensor>>)>,
    ys: Vec<Option<Tensor>>,
    tokens: Vec<Option<Tensor>>,
    /// Each rank's output and its gradient (`grad_y`'s piece): where the backward starts.
    seeds: Vec<(Tensor, Tensor)>,
    /// Per rank, the x leaf of its own router and experts when their input gradients stay on
    /// the rank (EP off at `tt-3654`): the rank's share of x's gradient.
    x_shares: Vec<Option<Tensor>>,
}

/// The routing of one block on one copy of its x: what the experts and the combine need.
struct Chain {
    gate: Tensor,
    counts: Tensor,
    tok: Tensor,
    ss: Tensor,
    rows: Tensor,
    x_td: Tensor,
}

/// Runs the sharded layer; outputs named as the reference's, as DTensors.
pub fn run(sp: &MoeSpec, c: &Common, inputs: &Inputs) -> Result<Named<DTensor>, Fail> {
    let cfg = checks(sp, c)?;
    let view = crate::head::blocks_view(sp, inputs);
    let inputs = &view;
    let (dp, cp, tp) = MoeSpec::axes(c);
    let mesh = Arc::new(c.mesh().map_err(|e| Fail::new(Stage::Mesh, "ValueError", e.0))?);
    let d = sp.dims;
    let x = inputs.req("x");
    let bias = sp.load_balance_coeff.map(|_| match inputs.get("expert_bias") {
        Some(b) => b.to_kind(Kind::Float),
        None => Tensor::zeros([d.experts as i64], (Kind::Float, x.device())),
    });
    let blocks = (0..dp * cp)
        .map(|bi| {
            let (rows, seq) = (chunk(d.batch, dp, bi / cp), chunk(d.seq, cp, bi % cp));
            let xb = narrow(&narrow(x, 0, rows), 1, seq).detach().set_requires_grad(sp.backward);
            Block { rows, seq, x: xb }
        })
        .collect();
    let n = dp * cp * tp;
    let none = || (0..n).map(|_| None).collect::<Vec<_>>();
    let mut p = Prog {
        sp,
        inputs,
        cfg,
        tp,
        bias,
        blocks,
        params: Vec::new(),
        ys: none(),
        tokens: none(),
        seeds: Vec::new(),
        x_shares: none(),
    };
    if sp.parallel.ep == 1 {
        for bi in 0..p.blocks.len() {
            p.tensor_parallel_block(bi)?;
        }
    } else {
        p.expert_parallel(c)?;
    }
    if sp.backward {
        let pairs: Vec<(&Tensor, &Tensor)> = p.seeds.iter().map(|(y, g)| (y, g)).collect();
        crate::reference::backward(&pairs);
    }
    p.outputs(c, &mesh)
}

impl Prog<'_> {
    /// A fresh leaf holding `piece` of input `name` along `dim` (all of it for `None`).
    fn leaf(&self, name: &str, dim: i64, piece: Option<(usize, usize)>) -> Tensor {
        let t = self.inputs.req(name);
        match piece {
            Some(p) => narrow(t, dim, p),
            None => t.shallow_clone(),
        }
        .detach()
        .set_requires_grad(self.sp.backward)
    }

    fn put(&mut self, name: &'static str, rank: usize, t: Tensor) {
        let n = self.ys.len();
        let i = match self.params.iter().position(|(k, _)| *k == name) {
            Some(i) => i,
            None => {
                self.params.push((name, (0..n).map(|_| None).collect()));
                self.params.len() - 1
            }
        };
        self.params[i].1[rank] = Some(t);
    }

    fn grad_block(&self, bi: usize) -> Tensor {
        let b = &self.blocks[bi];
        narrow(&narrow(self.inputs.req("grad_y"), 0, b.rows), 1, b.seq)
    }

    /// The shared experts of block `bi` on its tp rank `t` (hidden dim sharded): a partial sum.
    fn shared_out(&mut self, bi: usize, t: usize) -> Option<Tensor> {
        let pieces = chunk(self.sp.dims.shared_hidden?, self.tp, t);
        let w1 = self.leaf("shared_w1", 0, Some(pieces));
        let w2 = self.leaf("shared_w2", 1, Some(pieces));
        let w3 = self.leaf("shared_w3", 0, Some(pieces));
        let out = kernels::shared(&self.blocks[bi].x, &w1, &w2, &w3);
        let r = bi * self.tp + t;
        self.put("shared_w1", r, w1);
        self.put("shared_w2", r, w2);
        self.put("shared_w3", r, w3);
        Some(out)
    }

    /// Block `bi`'s router on `x` with a fresh gate leaf, its counts, its rows in expert order
    /// (taken from `rows_of`: x itself, or at `tt-0.2.2` the block's x where x is the rank's
    /// own copy for its router).
    fn chain(&self, bi: usize, x: &Tensor, rows_of: &Tensor) -> Result<Chain, Fail> {
        let d = self.sp.dims;
        let gate = self.leaf("gate", 0, None);
        let b = &self.blocks[bi];
        let (bl, ll, dm, k) = (b.rows.1 as i64, b.seq.1 as i64, d.model as i64, d.top_k as i64);
        let routed = kernels::route(&self.cfg, x, &gate, self.bias.as_ref())?;
        let counts = kernels::counts(&routed.ids, d.experts);
        let x_td = rows_of.reshape([bl * ll, dm]);
        // Recorded (0.3.0, partial_dtensor, EP off, SP on, tp > 1, one batch row per rank):
        // x's gradient leaves out the routed experts' part.
        let xr = if drops_routed_x_grad(self.sp, self.tp, b.rows.1) { x_td.detach() } else { x_td.shallow_clone() };
        let scores = routed.topk_scores.reshape([bl * ll, k]);
        let (tok, ss, rows) = kernels::reorder(&xr, &scores, &routed.ids.reshape([bl * ll, k]), d.top_k);
        let (rows, ss) = kernels::score_first(kernels::Precision::Upstream, self.sp, rows, ss);
        Ok(Chain { gate, counts, tok, ss, rows, x_td })
    }

    /// EP off: block `bi` routed once (replicated over tp), experts sharded on F over tp. Where
    /// the revision leaves the experts' input gradients unreduced, every tp rank routes its own
    /// copy of x, so each keeps only its own share of the gradients of x and of the gate.
    fn tensor_parallel_block(&mut self, bi: usize) -> Result<(), Fail> {
        let (d, tp) = (self.sp.dims, self.tp);
        let own = !self.sp.revision.reduces_expert_input_grads() && self.sp.backward && tp > 1;
        // tt-0.2.2 (#2387), scores after the experts: each rank's router gets its own copy of x
        // (its score gradient is its hidden-dim share); the experts' rows come from the block's
        // x (their input gradient is all-reduced). Scores before the experts: the all-reduced
        // input gradient carries the whole score gradient, one router serves every rank.
        let own_router = !self.sp.revision.reduces_router_grads()
            && !self.sp.router.score_before_experts
            && self.sp.backward
            && tp > 1;
        let b = &self.blocks[bi];
        let (bl, ll, dm) = (b.rows.1 as i64, b.seq.1 as i64, d.model as i64);
        let (mut routed_parts, mut shared_parts, mut chain) = (Vec::new(), Vec::new(), None);
        for t in 0..tp {
            let r = bi * tp + t;
            if own || own_router || chain.is_none() {
                let block_x = self.blocks[bi].x.shallow_clone();
                let x =
                    if own || own_router { block_x.detach().set_requires_grad(true) } else { block_x.shallow_clone() };
                chain = Some(self.chain(bi, &x, if own_router { &block_x } else { &x })?);
                if own || own_router {
                    self.x_shares[r] = Some(x);
                }
            }
            let ch = chain.as_ref().expect("a chain");
            let sizes = Vec::<i64>::try_from(&ch.counts).expect("int counts");
            self.put("gate", r, ch.gate.shallow_clone());
            let f = Some(chunk(d.hidden, tp, t));
            let (w1, w2, w3) = (self.leaf("w1", 1, f), self.leaf("w2", 2, f), self.leaf("w3", 1, f));
            let y = kernels::experts(&ch.rows, &sizes, &w1, &w2, &w3)?;
            routed_parts.push(kernels::combine(&y, &ch.ss, &ch.tok, &ch.x_td).reshape([bl, ll, dm]));
            self.put("w1", r, w1);
            self.put("w2", r, w2);
            self.put("w3", r, w3);
            shared_parts.extend(self.shared_out(bi, t));
            self.tokens[r] = Some(ch.counts.to_kind(Kind::Float));
        }
        if self.sp.parallel.sp {
            // Routed exit and shared w2 each reduce-scatter P -> S(1); the sum is sharded.
            let routed = sum(&routed_parts);
            self.sequence_parallel_exit(bi, |_| routed.shallow_clone(), &shared_parts, true);
        } else {
            // Routed + shared on each rank (P + P), then the exit all-reduce.
            self.all_reduce_exit(bi, routed_parts, &shared_parts);
        }
        Ok(())
    }

    /// SP exit of block `bi`: rank t keeps `routed(t)` (its chunk already when `!chunked`,
    /// else chunked here) plus its chunk of the reduce-scattered shared output.
    fn sequence_parallel_exit(
        &mut self,
        bi: usize,
        routed: impl Fn(usize) -> Tensor,
        shared: &[Tensor],
        chunked: bool,
    ) {
        let shared = (!shared.is_empty()).then(|| sum(shared));
        let len = self.blocks[bi].seq.1;
        for t in 0..self.tp {
            let piece = chunk(len, self.tp, t);
            let mut y = if chunked { narrow(&routed(t), 1, piece) } else { routed(t) };
            if let Some(s) = &shared {
                y = &y + narrow(s, 1, piece);
            }
            if self.sp.backward {
                self.seeds.push((y.shallow_clone(), narrow(&self.grad_block(bi), 1, piece)));
            }
            self.ys[bi * self.tp + t] = Some(y);
        }
    }

    /// SP-off exit of block `bi`: each rank's partial (routed + shared), all-reduced.
    fn all_reduce_exit(&mut self, bi: usize, routed: Vec<Tensor>, shared: &[Tensor]) {
        let outs: Vec<Tensor> = routed
            .into_iter()
            .enumerate()
            .map(|(t, r)| match shared.get(t) {
                Some(s) => r + s,
                None => r,
            })
            .collect();
        let y = sum(&outs);
        if self.sp.backward {
            self.seeds.push((y.shallow_clone(), self.grad_block(bi)));
        }
        for t in 0..self.tp {
            self.ys[bi * self.tp + t] = Some(y.shallow_clone());
        }
    }

    /// EP on: each rank routes its tp chunk of its block's sequence, exchanges rows with its ep
    /// group, runs its local experts and gets its rows back; then the shared experts and exits.
    fn expert_parallel(&mut self, _c: &Common) -> Result<(), Fail> {
        let tp = self.tp;
        let srcs = self.dispatch()?;
        if self.sp.revision.routes_whole_block() {
            // 0.2.x's router counts every token of the block on every tp rank (the reorderer's
            // split comes after it): the block's counts, the same on each tp rank.
            for bi in 0..self.blocks.len() {
                let total = sum(&(0..tp)
                    .map(|t| self.tokens[bi * tp + t].as_ref().expect("counts").shallow_clone())
                    .collect::<Vec<_>>());
                for t in 0..tp {
                    self.tokens[bi * tp + t] = Some(total.shallow_clone());
                }
            }
        }
        let (outs, at) = self.local_experts(&srcs)?;
        let routed = self.combine(&srcs, &outs, &at)?;
        let local = self.sp.revision.combine() == Combine::Local;
        for bi in 0..self.blocks.len() {
            let shared: Vec<Tensor> = (0..tp).filter_map(|t| self.shared_out(bi, t)).collect();
            if !local {
                // A token buffer per rank, Partial over tp: reduce-scattered (SP) or all-reduced.
                let parts: Vec<Tensor> = (0..tp).map(|t| routed[bi * tp + t].shallow_clone()).collect();
                if self.sp.parallel.sp {
                    let total = sum(&parts);
                    self.sequence_parallel_exit(bi, |_| total.shallow_clone(), &shared, true);
                } else {
                    self.all_reduce_exit(bi, parts, &shared);
                }
            } else if self.sp.parallel.sp {
                self.sequence_parallel_exit(bi, |t| routed[bi * tp + t].shallow_clone(), &shared, false);
            } else {
                // Routed S(1) -> P by zero-fill, + shared P, then the exit all-reduce.
                let filled = (0..self.tp).map(|t| self.zero_fill(bi, t, &routed[bi * self.tp + t])).collect();
                self.all_reduce_exit(bi, filled, &shared);
            }
        }
        Ok(())
    }

    /// Every rank's router on its chunk, its counts, and its rows in expert order.
    /// The router on a rank's piece of tokens, the first of which is token `first` of its block.
    /// 0.2.x (`tt-0.2.2`) routes every token of the block before the flat split, so the
    /// force-load-balance override's round robin counts from the block's first token there
    /// (recorded on torchtitan 0.2.2); elsewhere each rank's router counts from its own first.
    fn route_piece(&self, xr: &Tensor, gate: &Tensor, first: usize) -> Result<kernels::Routed, Fail> {
        if !self.sp.revision.routes_whole_block() || !self.cfg.options.force_load_balance || first == 0 {
            return kernels::route(&self.cfg, xr, gate, self.bias.as_ref());
        }
        let (s, k) = (xr.size(), self.sp.dims.top_k as i64);
        let n = s[0] * s[1] * k;
        let ids = (Tensor::arange(n, (Kind::Int64, xr.device())) + first as i64 * k)
            .remainder(self.sp.dims.experts as i64)
            .reshape([s[0], s[1], k]);
        kernels::route_at(&self.cfg, xr, gate, &ids)
    }

    fn dispatch(&mut self) -> Result<Vec<Src>, Fail> {
        let (d, tp) = (self.sp.dims, self.tp);
        let (dm, k) = (d.model as i64, d.top_k as i64);
        let mut srcs = Vec::with_capacity(self.ys.len());
        // tt-0.2.2 (#2387): a rank's router and rows read its own copy of x, whose gradient
        // (its slice of the flat tokens only) no one sums over tp.
        let own = !self.sp.revision.reduces_router_grads() && self.sp.backward && tp > 1;
        for r in 0..self.ys.len() {
            let b = &self.blocks[r / tp];
            let bx = if own { b.x.detach().set_requires_grad(true) } else { b.x.shallow_clone() };
            if own {
                self.x_shares[r] = Some(bx.shallow_clone());
            }
            let b = &self.blocks[r / tp];
            let (bl, lr, xr, first) = if self.sp.revision.combine() == Combine::Flat {
                // tt-3386: the flat tokens of the block, split over tp; one (1, T_r) row.
                let t = b.rows.1 * b.seq.1;
                let piece = chunk(t, tp, r % tp);
                (1, piece.1 as i64, narrow(&bx.reshape([t as i64, dm]), 0, piece).unsqueeze(0), piece.0)
            } else {
                let piece = chunk(b.seq.1, tp, r % tp);
                (b.rows.1 as i64, piece.1 as i64, narrow(&b.x, 1, piece), 0)
            };
            let gate = self.leaf("gate", 0, None);
            let routed = self.route_piece(&xr, &gate, first)?;
            self.put("gate", r, gate);
            let counts = kernels::counts(&routed.ids, d.experts);
            self.tokens[r] = Some(counts.to_kind(Kind::Float));
            let x_td = xr.reshape([bl * lr, dm]);
            let scores = routed.topk_scores.reshape([bl * lr, k]);
            let (tok, ss, rows) = kernels::reorder(&x_td, &scores, &routed.ids.reshape([bl * lr, k]), d.top_k);
            let (rows, ss) = kernels::score_first(kernels::Precision::Upstream, self.sp, rows, ss);
            let counts = Vec::<i64>::try_from(&counts).expect("int counts");
            let mut offs = vec![0i64; counts.len() + 1];
            for i in 0..counts.len() {
                offs[i + 1] = offs[i] + counts[i];
            }
            srcs.push(Src { tok, ss, rows, x_td, counts, offs, shape: (bl, lr) });
        }
        Ok(srcs)
    }

    /// Each rank's received rows in (local expert, source rank) order through its local
    /// experts; `at[r][i * ep + s]` = (start, length) of source s's rows for local expert i.
    #[allow(clippy::type_complexity)]
    fn local_experts(&mut self, srcs: &[Src]) -> Result<(Vec<Tensor>, Vec<Vec<(i64, i64)>>), Fail> {
        let d = self.sp.dims;
        let (ep, e) = (self.sp.parallel.ep, d.experts / self.sp.parallel.ep);
        let (mut outs, mut at) = (Vec::new(), Vec::new());
        for r in 0..srcs.len() {
            let (group, j) = (r / ep, r % ep);
            let (mut pieces, mut place, mut sizes, mut pos) = (Vec::new(), Vec::new(), vec![0i64; e], 0i64);
            for (i, size) in sizes.iter_mut().enumerate() {
                let ex = j * e + i;
                for src in &srcs[group * ep..group * ep + ep] {
                    let len = src.counts[ex];
                    pieces.push(src.rows.narrow(0, src.offs[ex], len));
                    place.push((pos, len));
                    pos += len;
                    *size += len;
                }
            }
            let input = Tensor::cat(&pieces, 0);
            let mine = Some((j * e, e));
            let (w1, w2, w3) = (self.leaf("w1", 0, mine), self.leaf("w2", 0, mine), self.leaf("w3", 0, mine));
            outs.push(kernels::experts(&input, &sizes, &w1, &w2, &w3)?);
            self.put("w1", r, w1);
            self.put("w2", r, w2);
            self.put("w3", r, w3);
            at.push(place);
        }
        Ok((outs, at))
    }

    /// The rows back to their sources (expert order), combined at their own tokens (the local
    /// combine: the rank's (B, c_r) chunk) or into the revision's token buffer (its (B, L) block,
    /// a partial sum over tp).
    fn combine(&self, srcs: &[Src], outs: &[Tensor], at: &[Vec<(i64, i64)>]) -> Result<Vec<Tensor>, Fail> {
        let d = self.sp.dims;
        let (ep, e) = (self.sp.parallel.ep, d.experts / self.sp.parallel.ep);
        srcs.iter()
            .enumerate()
            .map(|(r, src)| {
                let (group, s) = (r / ep, r % ep);
                let pieces: Vec<Tensor> = (0..d.experts)
                    .map(|ex| {
                        let (start, len) = at[group * ep + ex / e][(ex % e) * ep + s];
                        outs[group * ep + ex / e].narrow(0, start, len)
                    })
                    .collect();
                let back = Tensor::cat(&pieces, 0);
                let (bl, lr) = src.shape;
                let b = &self.blocks[r / self.tp];
                // The flat split (tt-3386) sees its block as one row of B·L tokens.
                let flat = self.sp.revision.combine() == Combine::Flat;
                let seq = if flat { b.rows.1 * b.seq.1 } else { b.seq.1 };
                let g = Geometry { batch: bl as usize, seq, n: self.tp, r: r % self.tp, c_r: lr as usize };
                let block = [b.rows.1 as i64, b.seq.1 as i64, d.model as i64];
                match buffer_combine::buffer(self.sp.revision.combine(), g) {
                    Some(buf) => buffer_combine::into_buffer(&buf, &back, &src.ss, &src.tok, bl as usize, seq)
                        .map(|t| t.reshape(block)),
                    None => Ok(kernels::combine(&back, &src.ss, &src.tok, &src.x_td).reshape([bl, lr, d.model as i64])),
                }
            })
            .collect()
    }

    /// DTensor's Shard(1) -> Partial of rank t's routed chunk: zeros around it.
    fn zero_fill(&self, bi: usize, t: usize, routed: &Tensor) -> Tensor {
        let b = &self.blocks[bi];
        let piece = chunk(b.seq.1, self.tp, t);
        let opts = (routed.kind(), routed.device());
        let (bl, dm) = (b.rows.1 as i64, self.sp.dims.model as i64);
        let before = Tensor::zeros([bl, piece.0 as i64, dm], opts);
        let after = Tensor::zeros([bl, (b.seq.1 - piece.0 - piece.1) as i64, dm], opts);
        Tensor::cat(&[before, routed.shallow_clone(), after], 1)
    }

    /// Rank r's gradient of its block's x. With per-rank shares (EP off at `tt-3654`), the
    /// experts' and router's share is Replicate-labelled: alone it is the rank's whole gradient;
    /// beside the shared experts' Partial gradient DTensor's add turns it to Partial by dividing
    /// it by n, so every rank gets the shared part plus the mean of the shares.
    fn x_grad(&self, bi: usize, r: usize) -> Tensor {
        let b = &self.blocks[bi];
        let Some(own) = &self.x_shares[r] else { return grad_of(&b.x) };
        if !self.sp.revision.reduces_router_grads() {
            // tt-0.2.2: plain tensors add up on the rank (the shared experts' and, without EP,
            // the experts' all-reduced parts, plus what the rank's own router and, under EP, its
            // own rows produced), labelled Replicate at the MoE input: never summed over tp.
            return grad_of(&b.x) + grad_of(own);
        }
        if self.sp.dims.shared_hidden.is_none() {
            return grad_of(own);
        }
        let shares: Vec<Tensor> =
            (0..self.tp).filter_map(|t| self.x_shares[bi * self.tp + t].as_ref().map(grad_of)).collect();
        grad_of(&b.x) + sum(&shares) / self.tp as f64
    }

    /// Every output as a DTensor on the dense mesh (the expert weights' gradients under EP on
    /// the sparse mesh), placements as the layer leaves them.
    fn outputs(mut self, c: &Common, mesh: &Arc<Mesh>) -> Result<Named<DTensor>, Fail> {
        let (sp, tp, n) = (self.sp, self.tp, self.ys.len());
        let mut out = Named::default();
        let y_ps = if sp.parallel.sp { [s(0), s(1), s(1)] } else { [s(0), s(1), R] };
        let y: Vec<Tensor> =
            std::mem::take(&mut self.ys).into_iter().map(|t| t.expect("every rank's y").detach()).collect();
        // The real layer's y and x.grad are per-rank plain tensors (spmd_types) or DTensors on tp
        // and ep only (the DTensor backends): over dp and cp nothing infers a global shape from
        // the local one, so an uneven cp chunk (trainer_checks off) is no shape verdict. The
        // global shape is the assembled one.
        let whole = Some(vec![sp.dims.batch, sp.dims.seq, sp.dims.model]);
        out.push("y", dt_shaped(y, mesh, &y_ps, whole.clone())?);
        if sp.backward {
            let xg: Vec<Tensor> = (0..n)
                .map(|r| {
                    let b = &self.blocks[r / tp];
                    let g = self.x_grad(r / tp, r);
                    if sp.parallel.sp {
                        narrow(&g, 1, chunk(b.seq.1, tp, r % tp))
                    } else {
                        g
                    }
                })
                .collect();
            out.push("x_grad", dt_shaped(xg, mesh, &y_ps, whole)?);
            let ep_on = sp.parallel.ep > 1;
            // tt-0.2.2: the gate is a replicated NoParallel module on tp, EP or not.
            let gate_tp = if sp.revision.routes_whole_block() { R } else { P };
            let sparse = Arc::new(sparse_mesh(sp, c)?);
            for (name, leaves) in &self.params {
                let locals: Vec<Tensor> =
                    leaves.iter().map(|t| grad_of(t.as_ref().expect("a leaf per rank"))).collect();
                let (ps, m): (Vec<Placement>, &Arc<Mesh>) = match (*name, ep_on) {
                    ("gate", false) => (vec![P, P, R], mesh),
                    ("gate", true) => (vec![P, P, gate_tp], mesh),
                    ("w1" | "w3", false) => (vec![P, P, s(1)], mesh),
                    ("w2", false) => (vec![P, P, s(2)], mesh),
                    ("w1" | "w2" | "w3", true) => (vec![P, P, s(0)], &sparse),
                    ("shared_w1" | "shared_w3", _) => (vec![P, P, s(0)], mesh),
                    _ => (vec![P, P, s(1)], mesh),
                };
                out.push(&format!("grad.{name}"), dt(locals, m, &ps)?);
            }
        }
        let tokens: Vec<Tensor> = self.tokens.into_iter().map(|t| t.expect("every rank's counts")).collect();
        // The hook's reductions: over tp when EP is on (the counts are partial there), then over
        // the loss mesh (dp x cp).
        let global = crate::spmd_backend::hook_counts(sp, tp, &tokens);
        let tpe_ps = if sp.parallel.ep > 1 && !sp.revision.routes_whole_block() { [P, P, P] } else { [P, P, R] };
        out.push("tokens_per_expert", dt(tokens, mesh, &tpe_ps)?);
        if let (Some(coeff), Some(b)) = (sp.load_balance_coeff, &self.bias) {
            let after: Vec<Tensor> = global.iter().map(|g| kernels::hook(b, g, coeff)).collect();
            out.push("expert_bias", dt(after, mesh, &[R, R, R])?);
        }
        Ok(out)
    }
}

/// Whether the run loses the routed experts' gradient of x: what the real DTensor backends
/// (partial_dtensor, full_dtensor)
/// layers at 0.3.0 do with EP off and SP on over tp > 1 when the rank's block has one batch row
/// (recorded on gloo ranks: x_grad equals the unsharded gradient without the routed experts'
/// input gradient, to float rounding, in all 13 such recordings; with two batch rows per rank,
/// SP off, or EP on, the gradient is complete). Where in torchtitan or DTensor the part is lost
/// is not established yet (docs/moe-layer.md). Not at `tt-head`: its (T, D) layer is not
/// recorded, and [`checks`] answers "not modelled" for that class there.
pub fn drops_routed_x_grad(sp: &MoeSpec, tp: usize, local_batch: usize) -> bool {
    sp.revision.combine() == Combine::Local
        && !sp.revision.folds_batch()
        && sp.backend != Backend::SpmdTypes
        && sp.parallel.ep == 1
        && sp.parallel.sp
        && tp > 1
        && local_batch == 1
}

/// Σ in rank order.
fn sum(v: &[Tensor]) -> Tensor {
    let mut it = v.iter();
    let first = it.next().expect("at least one rank").shallow_clone();
    it.fold(first, |a, b| a + b)
}

fn dt(locals: Vec<Tensor>, mesh: &Arc<Mesh>, ps: &[Placement]) -> Result<DTensor, Fail> {
    dt_shaped(locals, mesh, ps, None)
}

pub(crate) fn dt_shaped(
    locals: Vec<Tensor>,
    mesh: &Arc<Mesh>,
    ps: &[Placement],
    shape: Option<Vec<usize>>,
) -> Result<DTensor, Fail> {
    DTensor::from_local(locals, mesh, ps, shape).map_err(|e| Fail::new(Stage::Forward, "RuntimeError", e.to_string()))
}

/// The sparse mesh (dp_replicate, efsdp, ep), row-major over the same ranks.
pub fn sparse_mesh(sp: &MoeSpec, c: &Common) -> Result<Mesh, Fail> {
    let (dp, cp, tp) = MoeSpec::axes(c);
    let p = sp.parallel;
    let efsdp = (dp / p.dp_replicate) * cp * tp / p.ep;
    Mesh::new(vec![p.dp_replicate, efsdp, p.ep], vec!["dp_replicate".into(), "efsdp".into(), "ep".into()])
        .map_err(|e| Fail::new(Stage::Mesh, "ValueError", e.to_string()))
}
