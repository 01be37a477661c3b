//! The unsharded reference: torchtitan 0.3.0's MoE layer on one rank, on the whole input, with
//! libtorch's autograd for the backward. Outputs by name: y, x_grad, grad.<param> for every
//! parameter, tokens_per_expert (after the forward) and expert_bias (after one hook step).

use crate::error::{Fail, Stage};
use crate::kernels::{self, Precision};
use crate::spec::MoeSpec;
use harness::run::Inputs;
use harness::run::Named;
use harness::tensor_data::Ordered;
use tch::{Kind, Tensor};

/// The layer's weights as leaves that need gradients (when the case runs backward).
pub struct Params {
    pub gate: Tensor,
    pub w1: Tensor,
    pub w2: Tensor,
    pub w3: Tensor,
    pub shared: Option<[Tensor; 3]>,
}

impl Params {
    /// Fresh leaves holding `f(input)` of each parameter.
    pub fn of(inputs: &Inputs, grad: bool, f: impl Fn(&str, &Tensor) -> Tensor) -> Params {
        let leaf = |name: &str| f(name, inputs.req(name)).detach().set_requires_grad(grad);
        let shared = inputs.get("shared_w1").map(|_| [leaf("shared_w1"), leaf("shared_w2"), leaf("shared_w3")]);
        Params { gate: leaf("gate"), w1: leaf("w1"), w2: leaf("w2"), w3: leaf("w3"), shared }
    }

    /// Parameter names and values, in output order.
    pub fn named(&self) -> Vec<(&'static str, &Tensor)> {
        let mut v = vec![("gate", &self.gate), ("w1", &self.w1), ("w2", &self.w2), ("w3", &self.w3)];
        if let Some([a, b, c]) = &self.shared {
            v.extend([("shared_w1", a), ("shared_w2", b), ("shared_w3", c)]);
        }
        v
    }
}

/// The errors torchtitan raises whatever the sharding: construction (the coefficient), the
/// router's forward checks (groups, K > E). `Ok` when the layer can run.
pub fn layer_checks(s: &MoeSpec) -> Result<router::RouterConfig, Fail> {
    if let Some(k) = s.load_balance_coeff {
        if k <= 0.0 {
            return Err(Fail::new(Stage::Config, "AssertionError", ""));
        }
    }
    if s.dims.top_k > s.dims.experts {
        return Err(Fail::new(Stage::Forward, "RuntimeError", "selected index k out of range"));
    }
    s.router_config().map_err(|m| Fail::new(Stage::Forward, "ValueError", m))
}

/// Runs the reference on the case's inputs.
pub fn run(s: &MoeSpec, inputs: &Inputs) -> Result<Named<Tensor>, Fail> {
    routed(s, inputs).map(|(out, _)| out)
}

/// The reference and the expert ids its router chose (B, L, K).
pub fn routed(s: &MoeSpec, inputs: &Inputs) -> Result<(Named<Tensor>, Tensor), Fail> {
    run_in(s, inputs, Precision::Upstream, None)
}

/// The reference's exact shadow: the same layer in float64 without upstream's bf16 casts,
/// routed to `ids` (the reference's own choice), so that only rounding separates its outputs
/// from the reference's. The value oracle sizes its bound from that distance where the
/// outputs' own magnitude says too little (cancelling sums of large terms).
pub fn exact(s: &MoeSpec, inputs: &Inputs, ids: &Tensor) -> Result<Named<Tensor>, Fail> {
    let wide = Inputs(Ordered(inputs.0 .0.iter().map(|(n, t)| (n.clone(), t.to_kind(Kind::Double))).collect()));
    run_in(s, &wide, Precision::Exact, Some(ids)).map(|(out, _)| out)
}

/// The layer forward (and backward) rounding as `p` says, routing by itself or to `ids`.
fn run_in(s: &MoeSpec, inputs: &Inputs, p: Precision, ids: Option<&Tensor>) -> Result<(Named<Tensor>, Tensor), Fail> {
    let cfg = layer_checks(s)?;
    let view = crate::head::blocks_view(s, inputs);
    let inputs = &view;
    let d = &s.dims;
    let x = inputs.req("x").detach().set_requires_grad(s.backward);
    let w = Params::of(inputs, s.backward, |_, t| t.shallow_clone());
    let bias = s.load_balance_coeff.map(|_| match inputs.get("expert_bias") {
        Some(b) => b.to_kind(Kind::Float),
        None => Tensor::zeros([d.experts as i64], (Kind::Float, x.device())),
    });
    let r = match ids {
        Some(ids) => kernels::route_at(&cfg, &x, &w.gate, ids)?,
        None => kernels::route(&cfg, &x, &w.gate, bias.as_ref())?,
    };
    let counts = kernels::counts(&r.ids, d.experts);
    let (b, l, dm, k) = (d.batch as i64, d.seq as i64, d.model as i64, d.top_k as i64);
    let x_td = x.reshape([b * l, dm]);
    let (tok, ss, rows) =
        kernels::reorder(&x_td, &r.topk_scores.reshape([b * l, k]), &r.ids.reshape([b * l, k]), d.top_k);
    let (rows, ss) = kernels::score_first(p, s, rows, ss);
    let sizes = Vec::<i64>::try_from(&counts).expect("int counts");
    let y_rows = kernels::experts_in(p, &rows, &sizes, &w.w1, &w.w2, &w.w3)?;
    let mut y = kernels::combine_in(p, &y_rows, &ss, &tok, &x_td).reshape([b, l, dm]);
    if let Some([a, bb, c]) = &w.shared {
        y = &y + kernels::shared(&x, a, bb, c);
    }
    let mut out = Named::default();
    out.push("y", y.detach());
    if s.backward {
        backward(&[(&y, inputs.req("grad_y"))]);
        out.push("x_grad", grad_of(&x));
        for (name, t) in w.named() {
            out.push(&format!("grad.{name}"), grad_of(t));
        }
    }
    let tpe = counts.to_kind(Kind::Float);
    out.push("tokens_per_expert", tpe.shallow_clone());
    if let (Some(coeff), Some(bias)) = (s.load_balance_coeff, &bias) {
        out.push("expert_bias", kernels::hook(bias, &tpe, coeff));
    }
    Ok((out, r.ids))
}

/// `torch.autograd.backward(ys, gs)`: every leaf accumulates its gradient of `sum(y · g)` over
/// the pairs, whose gradient with respect to each y is its g, exactly. One engine call started
/// at the ys themselves ([`spmd::engine::backward_from`]); where the engine refuses a g, the
/// scalar root `Σ sum(y · g)` (float64 for the exact shadow; float32 otherwise).
pub fn backward(pairs: &[(&Tensor, &Tensor)]) {
    let seeded: Vec<&(&Tensor, &Tensor)> = pairs.iter().filter(|(y, _)| y.requires_grad()).collect();
    if seeded.is_empty() {
        return;
    }
    let ys: Vec<&Tensor> = seeded.iter().map(|(y, _)| *y).collect();
    let gs: Vec<&Tensor> = seeded.iter().map(|(_, g)| *g).collect();
    if !spmd::engine::backward_from(&ys, &gs) {
        let term = |(y, g): &&(&Tensor, &Tensor)| {
            (*y * *g).sum(if y.kind() == Kind::Double { Kind::Double } else { Kind::Float })
        };
        seeded.iter().map(term).reduce(|a, b| a + b).expect("a seeded pair").backward();
    }
}

/// A leaf's gradient, zeros where nothing reached it.
pub fn grad_of(t: &Tensor) -> Tensor {
    let g = t.grad();
    if g.defined() {
        g
    } else {
        t.zeros_like().detach()
    }
}
