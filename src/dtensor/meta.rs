//! Tensor metadata the sharding rules reason about: dtype and global shape. Pure data, no
//! libtorch, so that rules stay testable without it.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F32,
    F64,
    BF16,
    F16,
    Bool,
    I64,
    I32,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::BF16 => "bf16",
            DType::F16 => "f16",
            DType::Bool => "bool",
            DType::I64 => "i64",
            DType::I32 => "i32",
        }
    }
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
    pub fn is_float(self) -> bool {
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
    pub fn sum_dtype(self) -> DType {
        if self.is_float() {
            self
        } else {
            DType::I64
        }
    }
}

impl FromStr for DType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "f32" => DType::F32,
            "f64" => DType::F64,
            "bf16" => DType::BF16,
            "f16" => DType::F16,
            "bool" => DType::Bool,
            "i64" => DType::I64,
            "i32" => DType::I32,
            _ => return Err(format!("unknown dtype '{s}' (expected f32, bf16, f16, f64, bool, i64 or i32)")),
        })
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
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
pub fn torch_size(shape: &[usize]) -> String {
    let s: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("torch.Size([{}])", s.join(", "))
}

impl serde::Serialize for DType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for DType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
