//! Tensor metadata the sharding rules reason about: dtype and global shape. Pure data, no
//! libtorch, so that rules stay testable without it.

names::named_enum! {
    pub enum DType("dtype") {
        F32 = "f32",
        F64 = "f64",
        BF16 = "bf16",
        F16 = "f16",
        Bool = "bool",
        I64 = "i64",
        I32 = "i32",
    }
}

impl DType {
    /// PyTorch's spelling, as in `torch.float32`.
    pub fn torch_name(self) -> &'static str {
        match self {
            DType::F32 => "torch.float32",
            DType::F64 => "torch.float64",
            DType::BF16 => "torch.bfloat16",
            DType::F16 => "torch.float16",
            DType::Bool => "torch.bool",
            DType::I64 => "torch.int64",
            DType::I32 => "torch.int32",
        }
    }
    pub fn itemsize(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::BF16 | DType::F16 => 2,
            DType::Bool => 1,
        }
    }
    pub(crate) fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64 | DType::BF16 | DType::F16)
    }
    /// Unit roundoff (half an ulp at 1.0); 0 for exact types.
    pub fn eps(self) -> f64 {
        match self {
            DType::F64 => f64::EPSILON / 2.0,
            DType::F32 => f32::EPSILON as f64 / 2.0,
            DType::BF16 => 2f64.powi(-8),
            DType::F16 => 2f64.powi(-11),
            _ => 0.0,
        }
    }
    /// The dtype `sum` gives: integers and bool widen to int64, floats keep theirs.
    pub(crate) fn sum_dtype(self) -> DType {
        if self.is_float() {
            self
        } else {
            DType::I64
        }
    }
}

/// Global shape and dtype of one tensor argument.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Meta {
    pub shape: Vec<usize>,
    pub dtype: DType,
}

impl Meta {
    pub fn new(shape: Vec<usize>, dtype: DType) -> Meta {
        Meta { shape, dtype }
    }
    pub fn ndim(&self) -> usize {
        self.shape.len()
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// `torch.Size([2, 5, 8])`, as PyTorch prints shapes in messages.
pub(crate) fn torch_size(shape: &[usize]) -> String {
    let s: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("torch.Size([{}])", s.join(", "))
}
