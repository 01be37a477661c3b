//! The aten ops the simulated DTensor supports, with their static arguments. One value per call;
//! `rules` decides the sharding, `dispatch` redistributes and runs it on every rank.

use super::meta::DType;

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    // --- views (rules/view.rs) ---
    /// `aten.view` / `aten._unsafe_view` / `aten.reshape` to a shape (one entry may be -1).
    View {
        shape: Vec<i64>,
        unsafe_view: bool,
    },
    Unsqueeze {
        dim: i64,
    },
    // --- matrix (rules/matrix.rs) ---
    /// `aten.t`: transpose of a 2-D tensor.
    T,
    /// `aten.mm`: (m, k) x (k, n).
    Mm,
    /// `aten.addmm(bias, mat1, mat2)`: bias + mat1 x mat2, the bias broadcast over rows.
    Addmm,
    // --- pointwise (rules/pointwise.rs) ---
    Sigmoid,
    /// `aten.sigmoid_backward(grad_output, output)`.
    SigmoidBackward,
    /// `aten.neg`.
    Neg,
    /// `aten._to_copy` to a dtype.
    ToDtype(DType),
    /// `aten.add.Tensor` of two tensors.
    Add,
    Sub,
    Mul,
    Div,
    /// `aten.add.Tensor` / `aten.mul.Tensor` / `aten.div.Tensor` with a Python scalar.
    AddScalar(f64),
    MulScalar(f64),
    DivScalar(f64),
    /// `aten.masked_fill.Scalar(self, mask, value)`.
    MaskedFill(f64),
    // --- reductions and scans (rules/reduction.rs) ---
    /// `aten._softmax(x, dim, False)`.
    Softmax {
        dim: i64,
    },
    /// `aten._softmax_backward_data(grad_output, output, dim, input_dtype)`.
    SoftmaxBackward {
        dim: i64,
        input_dtype: DType,
    },
    /// `aten.sum.dim_IntList(x, dims, keepdim)`.
    Sum {
        dims: Vec<i64>,
        keepdim: bool,
    },
    /// `aten.cumsum(x, dim, dtype)`.
    Cumsum {
        dim: i64,
        dtype: Option<DType>,
    },
    // --- sort family (rules/sort.rs) ---
    /// `aten.topk(x, k, dim, largest, sorted)`: outputs (values, indices).
    Topk {
        k: usize,
        dim: i64,
        largest: bool,
        sorted: bool,
    },
    /// `aten.sort.stable(x, stable, dim, descending)`: outputs (values, indices); argsort keeps indices.
    Sort {
        dim: i64,
        stable: bool,
        descending: bool,
    },
    // --- gather/scatter (rules/scatter_gather.rs) ---
    /// `aten.gather(input, dim, index)`.
    Gather {
        dim: i64,
    },
    /// `aten.scatter{_}.value(self, dim, index, value)`.
    ScatterValue {
        dim: i64,
        value: f64,
        inplace: bool,
    },
    /// `aten.scatter{_}.src(self, dim, index, src)`.
    ScatterSrc {
        dim: i64,
        inplace: bool,
    },
    /// `aten.scatter_add(self, dim, index, src)` (out of place, as gather's backward calls it on
    /// DTensors).
    ScatterAdd {
        dim: i64,
    },
    // --- factories (rules/like.rs) ---
    ZerosLike(Option<DType>),
    OnesLike(Option<DType>),
    /// `aten.new_zeros(self, size)`: zeros of another shape, self's dtype and device.
    NewZeros {
        shape: Vec<usize>,
    },
    /// `aten.expand(self, size)` (a view).
    Expand {
        shape: Vec<usize>,
    },
}

impl Op {
    /// The overload name PyTorch prints in messages, e.g. `aten.scatter_.value`.
    pub(crate) fn aten_name(&self) -> String {
        match self {
            Op::View { unsafe_view: true, .. } => "aten._unsafe_view.default".into(),
            Op::View { .. } => "aten.view.default".into(),
            Op::Unsqueeze { .. } => "aten.unsqueeze.default".into(),
            Op::T => "aten.t.default".into(),
            Op::Mm => "aten.mm.default".into(),
            Op::Addmm => "aten.addmm.default".into(),
            Op::SigmoidBackward => "aten.sigmoid_backward.default".into(),
            Op::Neg => "aten.neg.default".into(),
            Op::SoftmaxBackward { .. } => "aten._softmax_backward_data.default".into(),
            Op::ScatterAdd { .. } => "aten.scatter_add.default".into(),
            Op::NewZeros { .. } => "aten.new_zeros.default".into(),
            Op::Expand { .. } => "aten.expand.default".into(),
            Op::Sigmoid => "aten.sigmoid.default".into(),
            Op::ToDtype(_) => "aten._to_copy.default".into(),
            Op::Add | Op::AddScalar(_) => "aten.add.Tensor".into(),
            Op::Sub => "aten.sub.Tensor".into(),
            Op::Mul | Op::MulScalar(_) => "aten.mul.Tensor".into(),
            Op::Div | Op::DivScalar(_) => "aten.div.Tensor".into(),
            Op::MaskedFill(_) => "aten.masked_fill.Scalar".into(),
            Op::Softmax { .. } => "aten._softmax.default".into(),
            Op::Sum { .. } => "aten.sum.dim_IntList".into(),
            Op::Cumsum { .. } => "aten.cumsum.default".into(),
            Op::Topk { .. } => "aten.topk.default".into(),
            Op::Sort { .. } => "aten.sort.stable".into(),
            Op::Gather { .. } => "aten.gather.default".into(),
            Op::ScatterValue { inplace: true, .. } => "aten.scatter_.value".into(),
            Op::ScatterValue { .. } => "aten.scatter.value".into(),
            Op::ScatterSrc { inplace: true, .. } => "aten.scatter_.src".into(),
            Op::ScatterSrc { .. } => "aten.scatter.src".into(),
            Op::ZerosLike(_) => "aten.zeros_like.default".into(),
            Op::OnesLike(_) => "aten.ones_like.default".into(),
        }
    }

    pub(crate) fn is_inplace(&self) -> bool {
        matches!(self, Op::ScatterValue { inplace: true, .. } | Op::ScatterSrc { inplace: true, .. })
    }

    /// Whether each rank's output shape comes from the output placements (views, expand, shaped
    /// factories) rather than from the local inputs.
    pub(crate) fn takes_local_shape(&self) -> bool {
        matches!(self, Op::View { .. } | Op::Expand { .. } | Op::NewZeros { .. })
    }

    /// Number of tensor outputs.
    pub(crate) fn n_outputs(&self) -> usize {
        match self {
            Op::Topk { .. } | Op::Sort { .. } => 2,
            _ => 1,
        }
    }
}
