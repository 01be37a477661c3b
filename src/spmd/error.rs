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
    /// A runtime failure of the computation itself (a torch error on a rank, an index out of
    /// range as in the library's chunk selection).
    #[error("RuntimeError: {0}")]
    Runtime(String),
}

impl SpmdError {
    /// The message text alone.
    pub fn message(&self) -> &str {
        match self {
            SpmdError::Type(m) | SpmdError::Value(m) | SpmdError::Runtime(m) => m,
        }
    }

    /// The Python exception class name.
    pub fn kind(&self) -> &'static str {
        match self {
            SpmdError::Type(_) => "SpmdTypeError",
            SpmdError::Value(_) => "ValueError",
            SpmdError::Runtime(_) => "RuntimeError",
        }
    }
}

pub type Result<T> = std::result::Result<T, SpmdError>;
