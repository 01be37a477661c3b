//! Input tensors of a case: from `data.tensors` when present, else drawn from `data.seed` by the
//! subject with the portable helpers here (ChaCha8, Box-Muller), so the same seed gives the same
//! values on every machine and libtorch version. Values are rounded to their dtypes by libtorch.

use crate::case::Case;
use crate::run::Inputs;
use crate::subject::Subject;
use crate::tensor_data::{Ordered, TensorData, Tensors};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tch::Device;

/// Standard normal by Box-Muller: portable, unlike libtorch's generators.
pub fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

pub fn draw(rng: &mut ChaCha8Rng, n: usize, f: impl Fn(&mut ChaCha8Rng) -> f64) -> Vec<f64> {
    (0..n).map(|_| f(rng)).collect()
}

/// `n` values `f(normal)`, the same as drawing them one by one: each normal takes exactly
/// four 32-bit words of the ChaCha stream, so large tensors are split across threads that seek
/// to their first word (a large preset's x is 15M values: 0.35 s on one core).
pub fn draw_normals(rng: &mut ChaCha8Rng, n: usize, f: impl Fn(f64) -> f64 + Sync) -> Vec<f64> {
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

/// The case's inputs on `device`: inline tensors win over the seed.
pub fn inputs<S: Subject>(case: &Case<S>, device: Device) -> Inputs {
    let named = |t: &Tensors| Inputs(Ordered(t.0.iter().map(|(n, d)| (n.clone(), d.to_tensor(device))).collect()));
    match &case.data.tensors {
        Some(t) => named(t),
        None => named(&case.subject.draw(case)),
    }
}

/// The case's inputs as inline tensors (rounded to their dtypes), for self-contained files.
pub fn inline<S: Subject>(case: &Case<S>) -> Tensors {
    let i = inputs(case, Device::Cpu);
    Ordered(i.0 .0.iter().map(|(n, t)| (n.clone(), TensorData::from_tensor(t))).collect())
}

/// The case with its inputs inline (unchanged when they already are).
pub fn with_inline<S: Subject>(case: &Case<S>) -> Case<S> {
    let mut c = case.clone();
    if c.data.tensors.is_none() {
        c.data.tensors = Some(inline(case));
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

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
