//! Input values drawn from a case's seed: portable (ChaCha8, Box-Muller), scaled so that every
//! activation stays of order one (weights by 1/sqrt(fan-in)).

use crate::spec::MoeSpec;
use harness::case::{Common, Style};
use harness::data::{draw, draw_normals, normal};
use harness::tensor_data::{Ordered, TensorData, Values};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Every input of `s` drawn from `data.seed` in `data.style`.
pub fn draw_inputs(s: &MoeSpec, c: &Common) -> harness::tensor_data::Tensors {
    let mut rng = ChaCha8Rng::seed_from_u64(c.data.seed());
    let d = &s.dims;
    let mut out = Vec::new();
    for spec in s.inputs(c) {
        let n: usize = spec.shape.iter().product();
        let fan_in = match spec.name {
            "w2" => d.hidden,
            "shared_w2" => d.shared_hidden.unwrap_or(1),
            "x" | "grad_y" | "expert_bias" => 1,
            _ => d.model,
        };
        let scale = match spec.name {
            "expert_bias" => 0.01,
            _ => 1.0 / (fan_in as f64).sqrt(),
        };
        let values = match c.data.style {
            Style::SmallInt => draw(&mut rng, n, |r| (normal(r) * 1.2).round().clamp(-2.0, 2.0)),
            Style::Large if spec.name == "x" => draw_normals(&mut rng, n, |z| z * 1e3),
            _ => draw_normals(&mut rng, n, |z| z * scale),
        };
        out.push((
            spec.name.to_string(),
            TensorData { shape: spec.shape, dtype: spec.dtype, values: Values::Float(values) },
        ));
    }
    Ordered(out)
}
