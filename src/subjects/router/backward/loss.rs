//! The loss that stands in for the experts: `L = Σ_r Σ_{t,k} ts_r[t,k] · V_r[t, ids_r[t,k]]`.
//! `V` is (T, E) in global token order (t = b·L + l), drawn from the case's `loss_seed` with
//! splitmix64 so that any language can redraw it; each rank's `V_r` follows from how that
//! revision's experts consume the gate values ([`LossClass`]). Values are multiples of 1/64 in
//! [-1, 1], so the partial shares sum to `V` exactly in float32.

use super::{BackwardSpec, Boundary};
use tch::{Device, Kind, Tensor};

/// How each rank's experts see the gate values' gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossClass {
    /// The reorderer hands rank r the rows `[r·T/n, (r+1)·T/n)` of the flattened tokens.
    Tokensplit,
    /// The router runs on token-sharded DTensors: each rank has its own tokens.
    Local,
    /// TP-sharded experts with #1878's all-reduce and `score_before_experts`: every rank holds
    /// the complete gradient.
    Replicated,
    /// TP-sharded experts otherwise: each rank holds a share, the shares sum to the gradient.
    Partial,
}

impl LossClass {
    /// The name outcomes give it.
    pub fn name(self) -> &'static str {
        match self {
            LossClass::Tokensplit => "tokensplit",
            LossClass::Local => "local",
            LossClass::Replicated => "replicated",
            LossClass::Partial => "partial",
        }
    }
}

/// torchtitan's reorderer refuses a token count that the TP degree does not divide.
pub(crate) const UNEVEN_SPLIT: &str =
    "Uneven split of tokens of is not supported yet. Requires EP degree dividing batch size * seq len.";

pub fn class(spec: &BackwardSpec, n: usize) -> LossClass {
    let b = spec.boundary;
    if spec.ep && matches!(b, Boundary::T3192 | Boundary::Clean | Boundary::T3654) {
        LossClass::Local
    } else if spec.ep && spec.etp == 1 && n > 1 && b.local_router(spec.ep) {
        LossClass::Tokensplit
    } else if spec.score_before_experts && b.has_1878() {
        LossClass::Replicated
    } else {
        LossClass::Partial
    }
}

fn splitmix64(z: u64) -> u64 {
    let mut z = z.wrapping_add(0x9E3779B97F4A7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
    z ^ (z >> 31)
}

/// Weight `i` of stream `s`: a multiple of 1/64 in [-1, 1].
fn weight(seed: u64, s: u64, i: u64) -> f32 {
    let u = splitmix64(seed.wrapping_add(s.wrapping_mul(0xD1B54A32D192ED03)).wrapping_add(i));
    ((u % 129) as i64 - 64) as f32 / 64.0
}

fn stream(seed: u64, s: u64, t: usize, e: usize) -> Vec<f32> {
    (0..(t * e) as u64).map(|i| weight(seed, s, i)).collect()
}

/// `V`, (T, E).
pub fn v(seed: u64, t: usize, e: usize) -> Vec<f32> {
    stream(seed, 0, t, e)
}

/// Rank r's weights `V_r` (T, E) in global token order, for `n` ranks.
pub(crate) fn rank_weights(seed: u64, t: usize, e: usize, n: usize, class: LossClass, r: usize) -> Vec<f32> {
    match class {
        LossClass::Partial if r + 1 < n => stream(seed, 1 + r as u64, t, e),
        LossClass::Partial => {
            let mut last = v(seed, t, e);
            for q in 0..n - 1 {
                last.iter_mut().zip(stream(seed, 1 + q as u64, t, e)).for_each(|(a, b)| *a -= b);
            }
            last
        }
        LossClass::Tokensplit => {
            let (lo, hi) = (r * (t / n), (r + 1) * (t / n));
            let mut w = v(seed, t, e);
            w.iter_mut().enumerate().filter(|(i, _)| !(lo..hi).contains(&(i / e))).for_each(|(_, x)| *x = 0.0);
            w
        }
        LossClass::Local | LossClass::Replicated => v(seed, t, e),
    }
}

/// The gradient of a rank's local loss with respect to its local gate values: `V_r[tok[t],
/// ids[t, k]]`, where `tok` holds the global token index of each local row.
pub fn seed(weights: &[f32], experts: usize, tok: &[i64], ids: &Tensor) -> Tensor {
    let w = Tensor::from_slice(weights).reshape([-1, experts as i64]).to_device(ids.device());
    let rows = Tensor::from_slice(tok).to_device(ids.device());
    let picked = w.index_select(0, &rows);
    let k = *ids.size().last().unwrap_or(&1);
    let flat_ids = ids.reshape([-1, k]);
    picked.gather(1, &flat_ids, false).reshape(ids.size()).to_kind(Kind::Float)
}

/// Σ_r |V_r| as a (T, E) tensor: how large the per-rank loss weights are, even where they sum to
/// zero (the partial shares), for rounding bounds.
pub(crate) fn abs_weights(seed: u64, t: usize, e: usize, n: usize, class: LossClass, device: Device) -> Tensor {
    let mut acc = vec![0.0f32; t * e];
    for r in 0..n {
        acc.iter_mut().zip(rank_weights(seed, t, e, n, class, r)).for_each(|(a, w)| *a += w.abs());
    }
    Tensor::from_slice(&acc).reshape([t as i64, e as i64]).to_device(device)
}

/// V as a (T, E) float32 tensor.
pub(crate) fn v_tensor(seed: u64, t: usize, e: usize, device: Device) -> Tensor {
    Tensor::from_slice(&v(seed, t, e)).reshape([t as i64, e as i64]).to_device(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_and_exact_shares() {
        // The reference outputs of splitmix64 seeded with 0 (Vigna's splitmix64.c).
        let mut state = 0u64;
        let mut next = || {
            let out = splitmix64(state);
            state = state.wrapping_add(0x9E3779B97F4A7C15);
            out
        };
        assert_eq!([next(), next(), next()], [0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4, 0x06c45d188009454f]);
        let (t, e, n) = (5, 4, 3);
        let shares: Vec<Vec<f32>> = (0..n).map(|r| rank_weights(11, t, e, n, LossClass::Partial, r)).collect();
        let v = v(11, t, e);
        for i in 0..t * e {
            assert_eq!(shares.iter().map(|s| s[i]).sum::<f32>(), v[i]);
            assert_eq!((v[i] * 64.0).fract(), 0.0);
        }
        let split: Vec<Vec<f32>> = (0..2).map(|r| rank_weights(11, 4, e, 2, LossClass::Tokensplit, r)).collect();
        assert!(split[0][2 * e..].iter().all(|&x| x == 0.0) && split[1][..2 * e].iter().all(|&x| x == 0.0));
    }
}
