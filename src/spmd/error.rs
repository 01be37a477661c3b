//! Errors, by the exception class the library raises.

use thiserror::Error;

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SpmdError {
    /// `SpmdTypeError`: the type checker rejected an op (the message as the library words it,
    /// without the operator context and the traceback hint it appends).
    #[error("SpmdTypeError: {0}")]
    Type(String),
    /// `ValueError`: a collective or conversion called with arguments it does not support.
    #[error("ValueError: {0}")]
    Value(String),
    /// A runtime failure of the computation itself: a torch error on a rank (the first line of
    /// libtorch's message, as Python shows it), or a failure of the simulated data movement.
    #[error("RuntimeError: {0}")]
    Runtime(String),
    /// `IndexError`: the library's `torch.chunk(...)[rank]` past the last chunk (`tuple index
    /// out of range`) when a dim has fewer chunks than the axis has ranks.
    #[error("IndexError: {0}")]
    Index(String),
}

impl SpmdError {
    /// The message text alone.
    pub fn message(&self) -> &str {
        match self {
            SpmdError::Type(m) | SpmdError::Value(m) | SpmdError::Runtime(m) | SpmdError::Index(m) => m,
        }
    }

    /// The Python exception class name.
    pub fn kind(&self) -> &'static str {
        match self {
            SpmdError::Type(_) => "SpmdTypeError",
            SpmdError::Value(_) => "ValueError",
            SpmdError::Runtime(_) => "RuntimeError",
            SpmdError::Index(_) => "IndexError",
        }
    }

    /// A libtorch error raised on a rank, as Python shows it: the first line of its message
    /// (the rest is libtorch's C++ context), an `IndexError` for a dim out of range
    /// (`TORCH_CHECK_INDEX`), a `RuntimeError` otherwise.
    pub fn torch(e: tch::TchError) -> SpmdError {
        let text = match e {
            tch::TchError::Torch(m) => m,
            e => e.to_string(),
        };
        let first = text.lines().next().unwrap_or("").to_string();
        if first.starts_with("Dimension out of range") {
            SpmdError::Index(first)
        } else {
            SpmdError::Runtime(first)
        }
    }
}

pub type Result<T> = std::result::Result<T, SpmdError>;
