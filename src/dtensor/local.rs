//! The narrow surface through which the simulated DTensor reaches libtorch: dtype mapping,
//! chunking, and fallible calls that turn libtorch errors into [`DTensorError::Local`].

use super::error::DTensorError;
use super::meta::DType;
use tch::{Kind, Tensor};

pub fn kind(d: DType) -> Kind {
    match d {
        DType::F32 => Kind::Float,
        DType::F64 => Kind::Double,
        DType::BF16 => Kind::BFloat16,
        DType::F16 => Kind::Half,
        DType::Bool => Kind::Bool,
        DType::I64 => Kind::Int64,
        DType::I32 => Kind::Int,
    }
}

pub fn dtype(k: Kind) -> DType {
    match k {
        Kind::Float => DType::F32,
        Kind::Double => DType::F64,
        Kind::BFloat16 => DType::BF16,
        Kind::Half => DType::F16,
        Kind::Bool => DType::Bool,
        Kind::Int64 => DType::I64,
        Kind::Int => DType::I32,
        other => panic!("dtype {other:?} is not used by the simulated DTensor"),
    }
}

pub fn shape(t: &Tensor) -> Vec<usize> {
    t.size().into_iter().map(|d| d as usize).collect()
}

pub fn i64s(v: &[usize]) -> Vec<i64> {
    v.iter().map(|&d| d as i64).collect()
}

extern "C" {
    fn shardfuzz_skip_cpp_backtraces();
}

/// Stops libtorch from capturing a C++ backtrace for each error it throws. tch reads an error's
/// full text, which symbolizes every frame of that backtrace (milliseconds per error, most of a
/// case's time when its program raises); `torch_err` keeps only the first line, so the messages
/// and error classes are unchanged. Called once per process, before the first program runs.
pub fn skip_cpp_backtraces() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: the shim (backtrace.cpp) takes no arguments and only swaps libtorch's fetcher.
    ONCE.call_once(|| unsafe { shardfuzz_skip_cpp_backtraces() });
}

/// Maps a libtorch error to the Python exception PyTorch would raise, keeping libtorch's first
/// line (tch appends a C++ backtrace that no Python user sees).
pub fn torch_err(e: tch::TchError) -> DTensorError {
    let full = e.to_string();
    let text = full.strip_prefix("Torch(\"").unwrap_or(&full);
    let text = text.strip_prefix("Internal torch error: ").unwrap_or(text);
    let first = text.lines().next().unwrap_or(text).trim_end_matches("\")").to_string();
    // Only c10::IndexError (TORCH_CHECK_INDEX: dim wrapping) reaches Python as IndexError; the
    // scatter/gather kernels' "index i is out of bounds" is a plain TORCH_CHECK, a RuntimeError
    // (checked on torch 2.13.0 with gloo ranks, docs/findings.md).
    let kind = if first.starts_with("Dimension out of range") { "IndexError" } else { "RuntimeError" };
    DTensorError::Local { kind, message: first }
}

/// On CUDA, an index out of range is a device-side assert that kills the CUDA context for the
/// rest of the process; check on the host first and raise the IndexError the CPU kernel raises.
/// (The CPU kernel checks itself, so CPU runs skip this and its device sync.)
pub(crate) fn check_index(this: &Tensor, dim: i64, index: &Tensor) -> Result<(), DTensorError> {
    if this.device() == tch::Device::Cpu || index.numel() == 0 {
        return Ok(());
    }
    let nd = this.dim().max(1) as i64;
    let d = if dim < 0 { dim + nd } else { dim };
    let size = if this.dim() == 0 { 1 } else { this.size().get(d as usize).copied().unwrap_or(0) };
    // One device-to-host copy for both ends, not one sync each.
    let ends = Vec::<i64>::try_from(
        Tensor::stack(&[index.min(), index.max()], 0).to_kind(tch::Kind::Int64).to_device(tch::Device::Cpu),
    )
    .unwrap_or_default();
    let (lo, hi) = (ends.first().copied().unwrap_or(0), ends.get(1).copied().unwrap_or(0));
    let bad = if lo < 0 {
        Some(lo)
    } else if hi >= size {
        Some(hi)
    } else {
        None
    };
    match bad {
        Some(i) => Err(DTensorError::Local {
            kind: "RuntimeError",
            message: format!("index {i} is out of bounds for dimension {d} with size {size}"),
        }),
        None => Ok(()),
    }
}

/// `this.scatter(dim, index, value)` as torch's `scatter.value`. The value goes in as a filled
/// tensor (tch's Scalar overloads are not fallible), so the src clause that a tensor src adds to
/// the shape-check text is removed: real torch 2.12.1/2.14.0 print none (docs/crosscheck.md).
pub fn scatter_value(this: &Tensor, dim: i64, index: &Tensor, value: f64) -> Result<Tensor, DTensorError> {
    check_index(this, dim, index)?;
    this.f_scatter(dim, index, &filled(value, this, index)).map_err(|e| match torch_err(e) {
        DTensorError::Local { kind, message } => {
            let message = match message.find(" and to be no larger size than src") {
                Some(i) => message[..i].to_string(),
                None => message,
            };
            DTensorError::Local { kind, message }
        }
        other => other,
    })
}

/// Piece `idx` of `t` chunked `n` ways along `dim` (torch.chunk layout, possibly empty).
pub fn chunk(t: &Tensor, dim: usize, n: usize, idx: usize) -> Tensor {
    let size = t.size()[dim] as usize;
    let (len, off) = placement::layout::chunk(size, n, idx);
    // PyTorch's shards are contiguous (`_split_tensor` clones them); views depend on it.
    t.narrow(dim as i64, off as i64, len as i64).contiguous()
}

/// Rows `positions` of `t` along `dim`.
pub(crate) fn select_positions(t: &Tensor, dim: usize, positions: &[usize]) -> Tensor {
    let idx = Tensor::from_slice(&i64s(positions)).to_device(t.device());
    t.index_select(dim as i64, &idx)
}

/// `value` as a tensor of `like`'s dtype, shaped like `shape_of` (expanded, no copy).
///
/// Fallible libtorch calls must not take a `tch::Scalar`: tch frees the scalar before it reads
/// the error, and the free then panics on the pending error. Values go in as tensors instead.
pub fn filled(value: f64, like: &Tensor, shape_of: &Tensor) -> Tensor {
    scalar(value, like).expand(shape_of.size(), false)
}

/// `value` as a 0-dim tensor of `like`'s dtype and device.
pub fn scalar(value: f64, like: &Tensor) -> Tensor {
    Tensor::from(value).to_kind(like.kind()).to_device(like.device())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With libtorch's C++ backtraces skipped, an error still reads as the Python user sees it:
    /// the same first line and class, and nothing symbolized after it.
    #[test]
    fn skipped_backtraces_keep_the_message() {
        let t = Tensor::zeros([2, 3], (tch::Kind::Float, tch::Device::Cpu));
        let before = torch_err(t.f_view([4]).unwrap_err());
        skip_cpp_backtraces();
        let raw = t.f_view([4]).unwrap_err().to_string();
        assert!(!raw.contains("frame #"), "a backtrace is still attached: {raw}");
        let after = torch_err(t.f_view([4]).unwrap_err());
        let DTensorError::Local { kind, message } = &after else { panic!("{after:?}") };
        assert_eq!((*kind, message.as_str()), ("RuntimeError", "shape '[4]' is invalid for input of size 6"));
        assert_eq!(format!("{before:?}"), format!("{after:?}"));
        let e = torch_err(t.f_select(5, 0).unwrap_err());
        assert!(matches!(e, DTensorError::Local { kind: "IndexError", .. }), "{e:?}");
    }
}
