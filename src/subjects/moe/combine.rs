//! Where the EP combine of each revision writes a rank's routed rows (docs/moe-revisions.md §2):
//! the token buffer's size and the global row of each local row, for the revisions before the
//! local combine of #3996. The buffer is Partial over tp: the routed output of a token is the sum
//! of whatever rows the tp ranks wrote at its position.

use crate::error::{Fail, Stage};
use crate::revision::Combine;
use tch::{Kind, Tensor};

/// One rank's view of the combine: B batch rows, the block's L positions, n tp ranks, rank r
/// holding `c_r` positions of each row (its local row i = b·c_r + l).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub batch: usize,
    pub seq: usize,
    pub n: usize,
    pub r: usize,
    pub c_r: usize,
}

/// A buffer combine: its rows, the global row of each local row, and how its rows become the
/// (B, L) tokens (`padded`: viewed (B, Lp) with Lp = rows / B and cut to L; else the first B·L
/// rows).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Buffer {
    pub rows: usize,
    pub at: Vec<i64>,
    pub padded: bool,
}

/// The buffer of revision combine `k` for geometry `g`; `None` for the local combine.
pub fn buffer(k: Combine, g: Geometry) -> Option<Buffer> {
    let Geometry { batch: b, seq: l, n, r, c_r } = g;
    let local = b * c_r;
    let m = (b * l).div_ceil(n);
    let (rows, padded, place): (usize, bool, Box<dyn Fn(usize) -> usize>) = match k {
        Combine::Local => return None,
        Combine::Flat => (local * n, false, Box::new(move |i| i + local * r)),
        Combine::RankOffset => (m * n, false, Box::new(move |i| i + m * r)),
        Combine::BatchAware => {
            let s = m / b;
            (m * n, false, Box::new(move |i| (i / s) * s * n + r * s + i % s))
        }
        Combine::RowPadded => {
            let lp = n * l.div_ceil(n);
            let s = lp / n;
            (b * lp, true, Box::new(move |i| (i / s) * lp + r * s + i % s))
        }
    };
    Some(Buffer { rows, at: (0..local).map(|i| place(i) as i64).collect(), padded })
}

/// The combine into a buffer: each routed row scaled in float32 by its score and cast back (as
/// [`crate::kernels::combine`]), then `zeros(rows, D).scatter_add(0, at[token], rows)`; the
/// buffer made (B, L, D). Out-of-range rows raise as torch does.
pub fn into_buffer(
    buf: &Buffer,
    y: &Tensor,
    scores_sorted: &Tensor,
    tok: &Tensor,
    batch: usize,
    seq: usize,
) -> Result<Tensor, Fail> {
    let d = y.size()[1];
    let scaled = (y.to_kind(Kind::Float) * scores_sorted.to_kind(Kind::Float).reshape([-1, 1])).to_kind(y.kind());
    let at = Tensor::from_slice(&buf.at).to_device(y.device());
    let idx = at.index_select(0, tok).reshape([-1, 1]).expand([-1, d], false);
    let zeros = Tensor::zeros([buf.rows as i64, d], (y.kind(), y.device()));
    let out = zeros.f_scatter_add(0, &idx, &scaled).map_err(|e| Fail::torch(Stage::Forward, e))?;
    let (b, l) = (batch as i64, seq as i64);
    Ok(if buf.padded {
        // An empty batch block (a shrunk case with fewer rows than dp ranks) has no padded rows.
        let lp = if b > 0 { buf.rows as i64 / b } else { l };
        out.reshape([b, lp, d]).narrow(1, 0, l)
    } else {
        out.narrow(0, 0, b * l).reshape([b, l, d])
    })
}

/// The flat combine's error at the MoE exit (`tt-3386`, EP on, tp = n > 1) for a (dp, cp) block
/// of T = `batch`·`seq` tokens with n not dividing T: every rank's routed buffer has T_r·n ≠ T
/// rows, a Partial DTensor whose global shape is its own local shape, so the add of the shared
/// experts' (T, D) output (or, without them, the reshape to (B, L, D)) raises; rank 0's text,
/// T_0 = ceil(T/n). Both texts checked on DTensor ops of torch 2.11.0 and 2.14.0 (2 gloo ranks).
pub fn flat_exit(batch: usize, seq: usize, n: usize, d: usize, shared: bool) -> Result<(), Fail> {
    let t = batch * seq;
    if n <= 1 || t.is_multiple_of(n) {
        return Ok(());
    }
    let rows = t.div_ceil(n) * n;
    let text = if shared {
        format!(
            "Attempting to broadcast a dimension of length {t} at -2! Mismatching argument at index 1 had torch.Size([{t}, {d}]); but expected shape should be broadcastable to [{rows}, {d}]"
        )
    } else {
        format!("shape '[{batch}, {seq}, {d}]' is invalid for input of size {}", rows * d)
    };
    Err(Fail::new(Stage::Forward, "RuntimeError", text))
}

/// `tt-0.2.2`'s reorderer input hook (EP on, etp = 1): the flat token count of a block must be
/// a multiple of tp (the hook's mesh is tp's, though its text names the EP degree); raised in
/// the forward on every rank. The package's text, "of is" included. The model meets it only
/// with uneven tp chunks of the sequence, which it answers "not modelled" first (the real
/// 0.2.2 layer's all-gather of an uneven sequence aborts before).
pub fn uneven_split(tokens: usize, tp: usize) -> Result<(), Fail> {
    if tp <= 1 || tokens.is_multiple_of(tp) {
        return Ok(());
    }
    Err(Fail::new(
        Stage::Forward,
        "ValueError",
        "Uneven split of tokens of is not supported yet. Requires EP degree dividing batch size * seq len.",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(k: Combine, b: usize, l: usize, r: usize, c_r: usize) -> Vec<i64> {
        buffer(k, Geometry { batch: b, seq: l, n: 2, r, c_r }).unwrap().at
    }

    #[test]
    fn the_offsets_of_the_revision_table() {
        // B = 2, L = 4, n = 2: rank 1 holds (0,2), (0,3), (1,2), (1,3).
        assert_eq!(at(Combine::RankOffset, 2, 4, 1, 2), [4, 5, 6, 7]);
        assert_eq!(at(Combine::BatchAware, 2, 4, 1, 2), [2, 3, 6, 7]);
        assert_eq!(at(Combine::RowPadded, 2, 4, 1, 2), [2, 3, 6, 7]);
        // B = 2, L = 3: rank 0 holds (0,0), (0,1), (1,0), (1,1); rank 1 (0,2), (1,2).
        assert_eq!(at(Combine::RankOffset, 2, 3, 1, 1), [3, 4]);
        assert_eq!(at(Combine::BatchAware, 2, 3, 0, 2), [0, 2, 4, 6]);
        assert_eq!(at(Combine::RowPadded, 2, 3, 1, 1), [2, 3]);
        assert!(buffer(Combine::Local, Geometry { batch: 1, seq: 1, n: 1, r: 0, c_r: 1 }).is_none());
        // tt-3386: flat T = 6 over n = 2, rank 1 holds flat rows 3..6 (the geometry is (1, T)).
        assert_eq!(at(Combine::Flat, 1, 6, 1, 3), [3, 4, 5]);
    }

    #[test]
    fn an_empty_batch_block_gives_an_empty_output() {
        let buf = buffer(Combine::RowPadded, Geometry { batch: 0, seq: 1, n: 2, r: 0, c_r: 0 }).unwrap();
        let y = Tensor::zeros([0, 8], (Kind::Float, tch::Device::Cpu));
        let none = Tensor::zeros([0], (Kind::Int64, tch::Device::Cpu));
        let out = into_buffer(&buf, &y, &none.to_kind(Kind::Float), &none, 0, 1).unwrap();
        assert_eq!(out.size(), [0, 1, 8]);
    }

    #[test]
    fn the_0_2_2_reorderer_refuses_an_uneven_flat_split() {
        assert!(uneven_split(4, 2).is_ok() && uneven_split(3, 1).is_ok());
        let e = uneven_split(3, 2).unwrap_err();
        assert_eq!(e.kind, "ValueError");
        assert!(e.message.starts_with("Uneven split of tokens of is not supported yet."), "{e:?}");
    }

    #[test]
    fn the_flat_exit_errors_at_uneven_t() {
        assert!(flat_exit(2, 2, 2, 8, true).is_ok());
        let e = flat_exit(1, 3, 2, 8, true).unwrap_err();
        assert!(e.message.contains("length 3 at -2") && e.message.ends_with("broadcastable to [4, 8]"), "{e:?}");
        let e = flat_exit(1, 3, 2, 8, false).unwrap_err();
        assert_eq!(e.message, "shape '[1, 3, 8]' is invalid for input of size 32");
    }
}
