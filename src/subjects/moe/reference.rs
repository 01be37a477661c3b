//! The unsharded reference: torchtitan 0.3.0's MoE layer on one rank, on the whole input, with
//! libtorch's autograd for the backward. Outputs by name: y, x_grad, grad.<param> for every
//! parameter, tokens_per_expert (after the forward) and expert_bias (after one hook step).

use crate::error::{Fail, Stage};
use crate::kernels;
use crate::spec::MoeSpec;
use harness::run::Inputs;
use harness::run::Named;
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
    let cfg = layer_checks(s)?;
    let view = crate::head::blocks_view(s, inputs);
    let inputs = &view;
    let d = &s.dims;
    let x = inputs.req("x").detach().set_requires_grad(s.backward);
    let p = Params::of(inputs, s.backward, |_, t| t.shallow_clone());
    let bias = s.load_balance_coeff.map(|_| match inputs.get("expert_bias") {
        Some(b) => b.to_kind(Kind::Float),
        None => Tensor::zeros([d.experts as i64], (Kind::Float, x.device())),
    });
    let r = kernels::route(&cfg, &x, &p.gate, bias.as_ref())?;
    let counts = kernels::counts(&r.ids, d.experts);
    let (b, l, dm, k) = (d.batch as i64, d.seq as i64, d.model as i64, d.top_k as i64);
    let x_td = x.reshape([b * l, dm]);
    let (tok, ss, rows) =
        kernels::reorder(&x_td, &r.topk_scores.reshape([b * l, k]), &r.ids.reshape([b * l, k]), d.top_k);
    let sizes = Vec::<i64>::try_from(&counts).expect("int counts");
    let y_rows = kernels::experts(&rows, &sizes, &p.w1, &p.w2, &p.w3)?;
    let mut y = kernels::combine(&y_rows, &ss, &tok, &x_td).reshape([b, l, dm]);
    if let Some([a, bb, c]) = &p.shared {
        y = &y + kernels::shared(&x, a, bb, c);
    }
    let mut out = Named::default();
    out.push("y", y.detach());
    if s.backward {
        let g = inputs.req("grad_y");
        backward(&y, g);
        out.push("x_grad", grad_of(&x));
        for (name, t) in p.named() {
            out.push(&format!("grad.{name}"), grad_of(t));
        }
    }
    let tpe = counts.to_kind(Kind::Float);
    out.push("tokens_per_expert", tpe.shallow_clone());
    if let (Some(coeff), Some(bias)) = (s.load_balance_coeff, &bias) {
        out.push("expert_bias", kernels::hook(bias, &tpe, coeff));
    }
    Ok(out)
}

/// `y.backward(g)`: the gradient of `sum(y · g)` with respect to y is g, exactly.
pub fn backward(y: &Tensor, g: &Tensor) {
    if y.requires_grad() {
        (y * g).sum(Kind::Float).backward();
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
