//! The router's inputs: x, the gate weight, and the optional gate and expert biases, drawn from
//! the case's seed in its style, and the logical values of Partial inputs.

use crate::reference::Weights;
use crate::spec::RouterSpec;
use dtensor::DType;
use harness::case::{Common, Style};
use harness::data::{self, draw_normals};
use harness::run::Inputs;
use harness::tensor_data::{Ordered, TensorData, Tensors, Values};
use placement::{Placement, ReduceOp};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

/// The router's inputs on a device, by role.
pub struct RouterInputs {
    pub x: Tensor,
    pub gate: Tensor,
    pub gate_bias: Option<Tensor>,
    pub expert_bias: Option<Tensor>,
}

impl RouterInputs {
    /// The named inputs of a case, by role (shallow copies).
    pub fn of(i: &Inputs) -> RouterInputs {
        let opt = |n: &str| i.get(n).map(Tensor::shallow_clone);
        RouterInputs {
            x: i.req("x").shallow_clone(),
            gate: i.req("gate").shallow_clone(),
            gate_bias: opt("gate_bias"),
            expert_bias: opt("expert_bias"),
        }
    }

    pub fn weights(&self) -> Weights<'_> {
        Weights { gate: &self.gate, gate_bias: self.gate_bias.as_ref(), expert_bias: self.expert_bias.as_ref() }
    }
}

/// Drawn values: x, gate, gate bias, expert bias (the biases only when the router has them).
pub(crate) struct Drawn {
    pub x: Vec<f64>,
    pub gate: Vec<f64>,
    pub gate_bias: Option<Vec<f64>>,
    pub expert_bias: Option<Vec<f64>>,
}

/// Draws the values of `x`, `gate` and `expert_bias` for a case (unrounded), then the gate bias
/// (drawn last, so cases without one draw what they always drew).
pub(crate) fn draw_values(s: &RouterSpec, c: &Common) -> Drawn {
    let d = s.dims;
    let case = c;
    let mut rng = ChaCha8Rng::seed_from_u64(case.data.seed());
    let (nx, ng, e) = (d.batch * d.seq * d.model, d.experts * d.model, d.experts);
    let inv_sqrt_d = 1.0 / (d.model as f64).sqrt();
    let small_int = |r: &mut ChaCha8Rng| r.random_range(-2i32..=2) as f64;
    let (x, gate, bias) = match case.data.style {
        Style::Normal | Style::Skewed => (
            draw_normals(&mut rng, nx, |z| z),
            draw_normals(&mut rng, ng, |z| z * inv_sqrt_d),
            draw_normals(&mut rng, e, |z| z * 1e-3),
        ),
        Style::Ties => {
            let x = draw_normals(&mut rng, nx, |z| z);
            // Experts 2i and 2i+1 share a gate row: their logits are bitwise equal.
            let mut gate = draw_normals(&mut rng, ng, |z| z * inv_sqrt_d);
            for ex in (1..d.experts).step_by(2) {
                let (a, b) = gate.split_at_mut(ex * d.model);
                b[..d.model].copy_from_slice(&a[(ex - 1) * d.model..]);
            }
            (x, gate, vec![0.0; e])
        }
        Style::Saturated => (
            draw_normals(&mut rng, nx, |z| z),
            draw_normals(&mut rng, ng, |z| z * 40.0 * inv_sqrt_d),
            draw_normals(&mut rng, e, |z| z * 1e-3),
        ),
        Style::Large => (
            draw_normals(&mut rng, nx, |z| z * 1e3),
            draw_normals(&mut rng, ng, |z| z * inv_sqrt_d),
            draw_normals(&mut rng, e, |z| z * 1e-3),
        ),
        Style::SmallInt => (data::draw(&mut rng, nx, small_int), data::draw(&mut rng, ng, small_int), vec![0.0; e]),
    };
    let gate_bias = s.router.gate_bias.then(|| match case.data.style {
        Style::Ties => vec![0.0; e],
        Style::SmallInt => data::draw(&mut rng, e, small_int),
        _ => draw_normals(&mut rng, e, |z| z * 0.1),
    });
    Drawn { x, gate, gate_bias, expert_bias: s.router.expert_bias.then_some(bias) }
}

/// The drawn values as the case's input tensors (in input order; rounded when built).
pub fn draw(s: &RouterSpec, c: &Common) -> Tensors {
    let v = draw_values(s, c);
    let d = s.dims;
    let td =
        |shape: Vec<usize>, dtype: DType, values: Vec<f64>| TensorData { shape, dtype, values: Values::Float(values) };
    let mut out = vec![
        ("x".to_string(), td(vec![d.batch, d.seq, d.model], c.dtype, v.x)),
        ("gate".to_string(), td(vec![d.experts, d.model], c.dtype, v.gate)),
    ];
    out.extend(v.expert_bias.map(|b| ("expert_bias".to_string(), td(vec![d.experts], DType::F32, b))));
    out.extend(v.gate_bias.map(|b| ("gate_bias".to_string(), td(vec![d.experts], c.dtype, b))));
    Ordered(out)
}

/// The value a distributed input stands for, when its layout has a Partial: DTensor's logical
/// value, the reduction of what every rank holds. `distribute_tensor` gives each rank
/// `_partition_value` of the tensor, mesh dim by mesh dim: `P(sum)` divides by the mesh dim's
/// size in the tensor's dtype (rounding when the size is not a power of two: a bf16 x over 3
/// ranks is off by up to an ulp), `P(avg|max|min)` keep it. So the logical value is the
/// divided tensor times the product of the `P(sum)` sizes, exact in float32 for bf16 and f16
/// inputs. The reference runs on it, so both sides compute the same function of the same
/// values. `None` when no input is Partial.
pub fn logical(s: &RouterSpec, c: &Common, inputs: &RouterInputs) -> Option<RouterInputs> {
    let l = &s.layout;
    let all = [Some(&l.x), Some(&l.gate), l.gate_bias.as_ref(), l.expert_bias.as_ref()];
    if !all.iter().flatten().any(|ps| ps.iter().any(|p| p.is_partial())) {
        return None;
    }
    let one = |t: &Tensor, ps: &[Placement]| {
        let mut v = t.shallow_clone();
        let mut n = 1.0;
        for (&size, p) in c.mesh.shape.iter().zip(ps) {
            if *p == Placement::Partial(ReduceOp::Sum) {
                v = &v / size as f64;
                n *= size as f64;
            }
        }
        if n == 1.0 {
            t.shallow_clone()
        } else {
            (v.to_kind(Kind::Double) * n).to_kind(Kind::Float)
        }
    };
    let opt = |t: &Option<Tensor>, ps: &Option<Vec<Placement>>| match (t, ps) {
        (Some(t), Some(ps)) => Some(one(t, ps)),
        (t, _) => t.as_ref().map(|t| t.shallow_clone()),
    };
    Some(RouterInputs {
        x: one(&inputs.x, &l.x),
        gate: one(&inputs.gate, &l.gate),
        gate_bias: opt(&inputs.gate_bias, &l.gate_bias),
        expert_bias: opt(&inputs.expert_bias, &l.expert_bias),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use harness::generate::GenCommon;
    use harness::stream::nth;
    use tch::Device;

    #[test]
    fn inputs_are_the_values_rounded_as_tensor_data_rounds_them() {
        for i in 0..40 {
            let case = nth::<RouterSpec>(9, i, &GenCommon::default(), &Default::default());
            let x = draw_values(&case.subject, &case).x;
            let d = case.subject.dims;
            let want = TensorData { shape: vec![d.batch, d.seq, d.model], dtype: case.dtype, values: Values::Float(x) }
                .to_tensor(Device::Cpu);
            let got = harness::data::inputs(&case, Device::Cpu);
            let got = got.req("x");
            assert_eq!(got.kind(), want.kind());
            assert!(got.equal(&want), "case {i}");
        }
    }
}
