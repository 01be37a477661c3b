//! Input tensors of a case: from `tensors` when present, else drawn from `data.seed` in the
//! named style with a portable generator (ChaCha8), so the same seed gives the same values on
//! every machine and libtorch version. Values are rounded to the case dtype by libtorch.

use super::case::{Case, Style, Tensors};
use super::tensor_data::TensorData;
use crate::dtensor::DType;
use crate::placement::{Placement, ReduceOp};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

/// The router's input tensors on a device.
pub struct Inputs {
    pub x: Tensor,
    pub gate: Tensor,
    pub gate_bias: Option<Tensor>,
    pub expert_bias: Option<Tensor>,
}

impl Inputs {
    pub fn weights(&self) -> crate::router::reference::Weights<'_> {
        crate::router::reference::Weights {
            gate: &self.gate,
            gate_bias: self.gate_bias.as_ref(),
            expert_bias: self.expert_bias.as_ref(),
        }
    }
}

/// Drawn values: x, gate, gate bias, expert bias (the biases only when the router has them).
pub struct Drawn {
    pub x: Vec<f64>,
    pub gate: Vec<f64>,
    pub gate_bias: Option<Vec<f64>>,
    pub expert_bias: Option<Vec<f64>>,
}

/// Standard normal by Box-Muller: portable, unlike libtorch's generators.
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn draw(rng: &mut ChaCha8Rng, n: usize, f: impl Fn(&mut ChaCha8Rng) -> f64) -> Vec<f64> {
    (0..n).map(|_| f(rng)).collect()
}

/// `n` values `f(normal)`, the same as drawing them one by one: each normal takes exactly
/// four 32-bit words of the ChaCha stream, so large tensors are split across threads that seek
/// to their first word (a large preset's x is 15M values: 0.35 s on one core).
fn draw_normals(rng: &mut ChaCha8Rng, n: usize, f: impl Fn(f64) -> f64 + Sync) -> Vec<f64> {
    const PARALLEL_FROM: usize = 1 << 16;
    if n < PARALLEL_FROM {
        return draw(rng, n, |r| f(normal(r)));
    }
    // available_parallelism reads cgroup files: ask once, not per tensor.
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let threads = *THREADS.get_or_init(|| std::thread::available_parallelism().map(|t| t.get()).unwrap_or(1).min(16));
    if threads < 2 {
        return draw(rng, n, |r| f(normal(r)));
    }
    let base = rng.get_word_pos();
    let mut out = vec![0.0f64; n];
    let chunk = n.div_ceil(threads);
    let f = &f;
    std::thread::scope(|s| {
        for (i, part) in out.chunks_mut(chunk).enumerate() {
            let mut r = rng.clone();
            r.set_word_pos(base + 4 * (i * chunk) as u128);
            s.spawn(move || part.iter_mut().for_each(|v| *v = f(normal(&mut r))));
        }
    });
    rng.set_word_pos(base + 4 * n as u128);
    out
}

/// Draws the values of `x`, `gate` and `expert_bias` for a case (unrounded), then the gate bias
/// (drawn last, so cases without one draw what they always drew).
pub fn draw_values(case: &Case) -> Drawn {
    let d = case.dims;
    let mut rng = ChaCha8Rng::seed_from_u64(case.data.seed);
    let (nx, ng, e) = (d.batch * d.seq * d.model, d.experts * d.model, d.experts);
    let inv_sqrt_d = 1.0 / (d.model as f64).sqrt();
    let small_int = |r: &mut ChaCha8Rng| r.random_range(-2i32..=2) as f64;
    let (x, gate, bias) = match case.data.style {
        Style::Normal => (
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
        Style::SmallInt => (draw(&mut rng, nx, small_int), draw(&mut rng, ng, small_int), vec![0.0; e]),
    };
    let gate_bias = case.router.gate_bias.then(|| match case.data.style {
        Style::Ties => vec![0.0; e],
        Style::SmallInt => draw(&mut rng, e, small_int),
        _ => draw_normals(&mut rng, e, |z| z * 0.1),
    });
    Drawn { x, gate, gate_bias, expert_bias: case.router.expert_bias.then_some(bias) }
}

/// As `TensorData::to_tensor` (f64 -> f32 in Rust, then libtorch's cast to the dtype), without
/// first copying the values into a `TensorData`: a large preset's x is 15M values.
fn tensor(values: &[f64], shape: &[usize], dtype: DType, device: Device) -> Tensor {
    let f: Vec<f32> = values.iter().map(|&x| x as f32).collect();
    Tensor::from_slice(&f)
        .to_kind(crate::dtensor::local::kind(dtype))
        .reshape(crate::dtensor::local::i64s(shape))
        .to_device(device)
}

/// The case's inputs on `device`: inline tensors win over the seed.
pub fn inputs(case: &Case, device: Device) -> Inputs {
    if let Some(t) = &case.tensors {
        return Inputs {
            x: t.x.to_tensor(device),
            gate: t.gate.to_tensor(device),
            gate_bias: t.gate_bias.as_ref().map(|b| b.to_tensor(device)),
            expert_bias: t.expert_bias.as_ref().map(|b| b.to_tensor(device)),
        };
    }
    let d = case.dims;
    let v = draw_values(case);
    Inputs {
        x: tensor(&v.x, &[d.batch, d.seq, d.model], case.dtype, device),
        gate: tensor(&v.gate, &[d.experts, d.model], case.dtype, device),
        gate_bias: v.gate_bias.map(|b| tensor(&b, &[d.experts], case.dtype, device)),
        expert_bias: v.expert_bias.map(|b| tensor(&b, &[d.experts], DType::F32, device)),
    }
}

/// The value a distributed input stands for, when its layout has a Partial: DTensor's logical
/// value, the reduction of what every rank holds. `distribute_tensor` gives each rank
/// `_partition_value` of the tensor, mesh dim by mesh dim: `P(sum)` divides by the mesh dim's
/// size in the tensor's dtype (rounding when the size is not a power of two: a bf16 x over 3
/// ranks is off by up to an ulp), `P(avg|max|min)` keep it. So the logical value is the
/// divided tensor times the product of the `P(sum)` sizes, exact in float32 for bf16 and f16
/// inputs. The reference runs on it, so both sides compute the same function of the same
/// values. `None` when no input is Partial.
pub fn logical(case: &Case, inputs: &Inputs) -> Option<Inputs> {
    let l = &case.layout;
    let all = [Some(&l.x), Some(&l.gate), l.gate_bias.as_ref(), l.expert_bias.as_ref()];
    if !all.iter().flatten().any(|ps| ps.iter().any(|p| p.is_partial())) {
        return None;
    }
    let one = |t: &Tensor, ps: &[Placement]| {
        let mut v = t.shallow_clone();
        let mut n = 1.0;
        for (&size, p) in case.mesh.shape.iter().zip(ps) {
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
    Some(Inputs {
        x: one(&inputs.x, &l.x),
        gate: one(&inputs.gate, &l.gate),
        gate_bias: opt(&inputs.gate_bias, &l.gate_bias),
        expert_bias: opt(&inputs.expert_bias, &l.expert_bias),
    })
}

/// The case's inputs as inline tensors (rounded to their dtypes), for self-contained files.
pub fn inline(case: &Case) -> Tensors {
    let i = inputs(case, Device::Cpu);
    Tensors {
        x: TensorData::from_tensor(&i.x),
        gate: TensorData::from_tensor(&i.gate),
        gate_bias: i.gate_bias.as_ref().map(TensorData::from_tensor),
        expert_bias: i.expert_bias.as_ref().map(TensorData::from_tensor),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::tensor_data::Values;

    #[test]
    fn inputs_are_the_values_rounded_as_tensor_data_rounds_them() {
        for i in 0..40 {
            let case = crate::harness::generate::nth(9, i, &crate::harness::generate::GenConfig::default());
            let x = draw_values(&case).x;
            let d = case.dims;
            let want = TensorData { shape: vec![d.batch, d.seq, d.model], dtype: case.dtype, values: Values::Float(x) }
                .to_tensor(Device::Cpu);
            let got = inputs(&case, Device::Cpu).x;
            assert_eq!(got.kind(), want.kind());
            assert!(got.equal(&want), "case {i}");
        }
    }

    #[test]
    fn parallel_normals_are_the_sequential_stream() {
        for n in [10usize, 70_000, 300_001] {
            let mut a = ChaCha8Rng::seed_from_u64(5);
            let mut b = ChaCha8Rng::seed_from_u64(5);
            // Start at an odd word to cover a stream that is not u64-aligned.
            let _: u32 = a.random();
            let _: u32 = b.random();
            let seq = draw(&mut a, n, |r| normal(r) * 0.5);
            let par = draw_normals(&mut b, n, |z| z * 0.5);
            assert!(seq.iter().zip(&par).all(|(x, y)| x.to_bits() == y.to_bits()), "n = {n}");
            // Both streams continue from the same place.
            assert_eq!(a.random::<u64>(), b.random::<u64>(), "n = {n}");
        }
    }
}
