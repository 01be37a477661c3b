//! Error bounds for comparing the sharded router with the reference, derived per token from
//! the dtype of the arithmetic and the reduction lengths (docs/oracles.md has the derivation).
//!
//! Both sides compute in float32 (inputs of any dtype are cast exactly), so the unit roundoff
//! is u = 2^-24 whatever the case dtype; what differs between them is the blocking of the gate
//! matmul. For a dot product of length D, |computed - exact| <= gamma_D * sum_i |x_i w_i| with
//! gamma_D = D u / (1 - D u) (Higham, Thm 3.1); two computations differ by at most twice that.

use crate::reference::Margins;
use dtensor::DType;

/// Per-token bounds.
#[derive(Clone, Debug)]
pub struct Bounds {
    /// How far either side's score (after sigmoid/softmax) may be from the exact one.
    pub score: Vec<f64>,
    /// The same for the choice scores (score + bias).
    pub choice: Vec<f64>,
    /// The same for group scores (sum of two choice scores).
    pub group: Vec<f64>,
}

pub(crate) fn gamma(n: usize, u: f64) -> f64 {
    let nu = n as f64 * u;
    nu / (1.0 - nu).max(1e-300)
}

impl Bounds {
    pub fn new(m: &Margins, model_dim: usize) -> Bounds {
        let u = DType::F32.eps();
        let g = gamma(model_dim, u);
        let mut score = Vec::with_capacity(m.absdot.len());
        let mut choice = Vec::with_capacity(m.absdot.len());
        let mut group = Vec::with_capacity(m.absdot.len());
        for (i, &ad) in m.absdot.iter().enumerate() {
            let logit = g * ad;
            // sigmoid is 1/4-Lipschitz and softmax's Jacobian has inf-norm <= 2; both functions
            // add a few ulps of their own.
            let s = 2.0 * logit + 8.0 * u;
            let c = s + 2.0 * u * m.scale[i].min(1e30);
            score.push(s);
            choice.push(c);
            group.push(2.0 * c + 2.0 * u * 2.0 * m.scale[i].min(1e30));
        }
        Bounds { score, choice, group }
    }

    /// A token's top-k choice is decided when the exact margin exceeds what both sides' errors
    /// can close.
    pub fn topk_decided(&self, m: &Margins, t: usize) -> bool {
        m.topk[t] > 2.0 * self.choice[t]
    }

    pub fn group_decided(&self, m: &Margins, t: usize) -> bool {
        m.group[t] > 2.0 * self.group[t]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_grow_with_the_reduction_length_and_magnitude() {
        let m = |ad: f64| Margins {
            topk: vec![1.0],
            group: vec![f64::INFINITY],
            scale: vec![1.0],
            absdot: vec![ad],
            choice: vec![],
            group_scores: vec![],
        };
        let small = Bounds::new(&m(1.0), 16);
        let long = Bounds::new(&m(1.0), 4096);
        let big = Bounds::new(&m(100.0), 16);
        assert!(long.score[0] > small.score[0]);
        assert!(big.score[0] > small.score[0]);
        assert!(small.score[0] < 1e-5, "a 16-long f32 dot of unit terms is accurate to ~1e-6");
        assert!(small.topk_decided(&m(1.0), 0));
        let tie = Margins { topk: vec![0.0], ..m(1.0) };
        assert!(!small.topk_decided(&tie, 0));
    }
}
