//! The router's math written once, for two executors: straight on DTensors (the forward check,
//! `sharded.rs`) and recorded on an autograd tape, on DTensors or on per-rank local tensors (the
//! backward programs, `backward/program.rs`). Ops are issued in the order PyTorch issues them,
//! so communication logs and errors come out as on real DTensor.

use super::config::{RouterConfig, ScoreFunc};
use dtensor::autograd::{Id, Tape, Val};
use dtensor::local_map::local_map;
use dtensor::{call, Ctx, DTensor, DType, Op, Result};

/// How a revision writes a scatter site (`this.scatter_(-1, index, value)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Site {
    InPlace,
    OutOfPlace,
    /// Under `local_map`, in/out placements from the live DTensors.
    LocalMap,
}

/// Where the router's ops run.
pub trait Exec {
    type V: Clone;
    fn op(&mut self, op: Op, args: &[&Self::V]) -> Result<Vec<Self::V>>;
    /// Names the value the next ops compute (communication logs say what they were for).
    fn label(&mut self, name: &str);
    fn shape(&self, v: &Self::V) -> Vec<usize>;
    fn dtype(&self, v: &Self::V) -> DType;
    /// A scatter site: `this.scatter_(-1, index, value)` written as `how`; a `local_map` site
    /// takes its placements from `placements_of` and `index`.
    fn scatter(
        &mut self,
        how: Site,
        this: &Self::V,
        placements_of: &Self::V,
        index: &Self::V,
        value: bool,
    ) -> Result<Self::V>;

    fn op1(&mut self, op: Op, args: &[&Self::V]) -> Result<Self::V> {
        Ok(self.op(op, args)?.swap_remove(0))
    }
}

/// DTensor ops run as they come.
pub(crate) struct Direct<'a>(pub &'a mut Ctx);

impl Exec for Direct<'_> {
    type V = DTensor;
    fn op(&mut self, op: Op, args: &[&DTensor]) -> Result<Vec<DTensor>> {
        call(self.0, &op, args)
    }
    fn label(&mut self, name: &str) {
        self.0.label(name)
    }
    fn shape(&self, v: &DTensor) -> Vec<usize> {
        v.shape.clone()
    }
    fn dtype(&self, v: &DTensor) -> DType {
        v.dtype
    }
    fn scatter(&mut self, how: Site, this: &DTensor, like: &DTensor, index: &DTensor, value: bool) -> Result<DTensor> {
        let v = if value { 1.0 } else { 0.0 };
        match how {
            Site::InPlace | Site::OutOfPlace => {
                let op = Op::ScatterValue { dim: -1, value: v, inplace: how == Site::InPlace };
                self.op1(op, &[this, index])
            }
            Site::LocalMap => {
                let ins = [like.placements.clone(), index.placements.clone()];
                let outs = [like.placements.clone()];
                let scatter =
                    |_: usize, t: &[&tch::Tensor]| dtensor::local::scatter_value(t[0], -1, t[1], v).map(|t| vec![t]);
                Ok(local_map(self.0, &[this, index], &ins, &outs, false, scatter)?.swap_remove(0))
            }
        }
    }
}

/// Ops recorded on an autograd tape (DTensors or per-rank local tensors).
pub(crate) struct Recorded<'a> {
    pub ctx: &'a mut Ctx,
    pub tape: &'a mut Tape,
}

impl Exec for Recorded<'_> {
    type V = Id;
    fn op(&mut self, op: Op, args: &[&Id]) -> Result<Vec<Id>> {
        let ids: Vec<Id> = args.iter().map(|&&i| i).collect();
        self.tape.op(self.ctx, op, &ids)
    }
    fn label(&mut self, name: &str) {
        self.tape.name(self.ctx, name)
    }
    fn shape(&self, v: &Id) -> Vec<usize> {
        self.tape.val(*v).shape()
    }
    fn dtype(&self, v: &Id) -> DType {
        self.tape.val(*v).dtype()
    }
    fn scatter(&mut self, how: Site, this: &Id, like: &Id, index: &Id, value: bool) -> Result<Id> {
        // The masks carry no gradient: scatter outside the tape, keep the result as a value.
        let (t, l, i) = (self.tape.val(*this).clone(), self.tape.val(*like).clone(), self.tape.val(*index).clone());
        let out = if let Val::D(_) = t {
            Val::D(Direct(self.ctx).scatter(how, t.dtensor(), l.dtensor(), i.dtensor(), value)?)
        } else {
            let op = Op::ScatterValue { dim: -1, value: if value { 1.0 } else { 0.0 }, inplace: false };
            dtensor::autograd::apply(self.ctx, &op, &[&t, &i])?.remove(0)
        };
        Ok(self.tape.leaf(out, false))
    }
}

/// `F.linear(x.float(), W.float(), b.float())` in the ops DTensor sees: a 2-D x is `t`, then
/// `mm` or `addmm`; a 3-D x without bias is `t`, `view` to (B·L, D), `mm`, `_unsafe_view`; with
/// a bias `view`, `t`, `addmm`, `view`.
pub fn linear<E: Exec>(ex: &mut E, x: &E::V, w: &E::V, b: Option<&E::V>) -> Result<E::V> {
    let to32 = |ex: &mut E, t: &E::V| {
        if ex.dtype(t) == DType::F32 {
            Ok(t.clone())
        } else {
            ex.op1(Op::ToDtype(DType::F32), &[t])
        }
    };
    let (x32, w32) = (to32(ex, x)?, to32(ex, w)?);
    let b32 = b.map(|b| to32(ex, b)).transpose()?;
    let shape = ex.shape(&x32);
    let e = ex.shape(&w32)[0] as i64;
    if shape.len() == 2 {
        let wt = ex.op1(Op::T, &[&w32])?;
        return match &b32 {
            Some(b) => ex.op1(Op::Addmm, &[b, &x32, &wt]),
            None => ex.op1(Op::Mm, &[&x32, &wt]),
        };
    }
    let (bb, l, d) = (shape[0] as i64, shape[1] as i64, shape[2] as i64);
    let flat = Op::View { shape: vec![bb * l, d], unsafe_view: false };
    let (logits2, unsafe_view) = match &b32 {
        None => {
            let wt = ex.op1(Op::T, &[&w32])?;
            let x2 = ex.op1(flat, &[&x32])?;
            (ex.op1(Op::Mm, &[&x2, &wt])?, true)
        }
        Some(b) => {
            let x2 = ex.op1(flat, &[&x32])?;
            let wt = ex.op1(Op::T, &[&w32])?;
            (ex.op1(Op::Addmm, &[b, &x2, &wt])?, false)
        }
    };
    ex.op1(Op::View { shape: vec![bb, l, e], unsafe_view }, &[&logits2])
}

/// Sigmoid or softmax of the logits, in float32.
pub fn score<E: Exec>(ex: &mut E, logits: &E::V, cfg: &RouterConfig) -> Result<E::V> {
    match cfg.options.score_func {
        ScoreFunc::Sigmoid => ex.op1(Op::Sigmoid, &[logits]),
        ScoreFunc::Softmax => ex.op1(Op::Softmax { dim: -1 }, &[logits]),
    }
}

/// The experts each token chooses: scores plus the expert bias, node-limited when groups are on
/// (the group mask written at `site`), top-k along the experts. Returns (ids, group mask).
pub fn choose<E: Exec>(
    ex: &mut E,
    scores: &E::V,
    bias: Option<&E::V>,
    cfg: &RouterConfig,
    site: Site,
) -> Result<(E::V, Option<E::V>)> {
    ex.label("scores_for_choice");
    let mut choice = match bias {
        Some(b) => ex.op1(Op::Add, &[scores, b])?,
        None => scores.clone(),
    };
    let mut group_mask = None;
    if let (Some(g), Some(p)) = (cfg.options.groups, cfg.experts_per_group()) {
        let flat: Vec<i64> = ex.shape(&choice).iter().map(|&d| d as i64).collect();
        let mut grouped_shape = flat[..flat.len() - 1].to_vec();
        grouped_shape.extend([g.num_groups as i64, p as i64]);
        ex.label("group_scores");
        let grouped = ex.op1(Op::View { shape: grouped_shape, unsafe_view: false }, &[&choice])?;
        let top2 = ex.op(Op::Topk { k: 2, dim: -1, largest: true, sorted: true }, &[&grouped])?.swap_remove(0);
        let gscores = ex.op1(Op::Sum { dims: vec![-1], keepdim: false }, &[&top2])?;
        let topk_groups = Op::Topk { k: g.num_limited, dim: -1, largest: true, sorted: false };
        let gidx = ex.op(topk_groups, &[&gscores])?.swap_remove(1);
        ex.label("group_mask");
        let ones = ex.op1(Op::OnesLike(Some(DType::Bool)), &[&gscores])?;
        let mask = ex.scatter(site, &ones, &ones, &gidx, false)?;
        ex.label("scores_for_choice");
        let mask4 = ex.op1(Op::Unsqueeze { dim: -1 }, &[&mask])?;
        let masked = ex.op1(Op::MaskedFill(f64::NEG_INFINITY), &[&grouped, &mask4])?;
        choice = ex.op1(Op::View { shape: flat, unsafe_view: false }, &[&masked])?;
        group_mask = Some(mask);
    }
    ex.label("topk_ids");
    let ids = ex.op(Op::Topk { k: cfg.top_k, dim: -1, largest: true, sorted: false }, &[&choice])?.swap_remove(1);
    Ok((ids, group_mask))
}

/// The gate values: the unbiased scores at the chosen experts, renormalised to sum 1 when
/// `route_norm`, times `route_scale`.
pub(crate) fn gate_values<E: Exec>(ex: &mut E, scores: &E::V, ids: &E::V, cfg: &RouterConfig) -> Result<E::V> {
    ex.label("topk_scores");
    let ts = ex.op1(Op::Gather { dim: -1 }, &[scores, ids])?;
    scale(ex, ts, cfg)
}

/// route_norm and route_scale on gathered gate values.
pub fn scale<E: Exec>(ex: &mut E, ts: E::V, cfg: &RouterConfig) -> Result<E::V> {
    let mut ts = ts;
    if cfg.options.route_norm {
        let s = ex.op1(Op::Sum { dims: vec![-1], keepdim: true }, &[&ts])?;
        let den = ex.op1(Op::AddScalar(1e-20), &[&s])?;
        ts = ex.op1(Op::Div, &[&ts, &den])?;
    }
    let scale = if dtensor::plant::active("gate-values-drift") {
        cfg.options.route_scale * (1.0 + 1.0 / 256.0)
    } else {
        cfg.options.route_scale
    };
    ex.op1(Op::MulScalar(scale), &[&ts])
}
