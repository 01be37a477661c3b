//! The per-axis local types, their gradient types, and the display forms the library's
//! messages use.

use std::collections::BTreeMap;
use std::fmt;

/// One mesh axis's local SPMD type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ty {
    /// Replicate: the same data on every rank; each use may contribute its own gradient.
    R,
    /// Invariant: the same data and the same work on every rank.
    I,
    /// Varying: different data per rank (a list of per-rank values).
    V,
    /// Partial: different data per rank whose meaning is their sum.
    P,
}

impl Ty {
    pub const ALL: [Ty; 4] = [Ty::R, Ty::I, Ty::V, Ty::P];

    /// The type of this value's gradient: R <-> P, I -> I, V -> V.
    pub fn backward(self) -> Ty {
        match self {
            Ty::R => Ty::P,
            Ty::I => Ty::I,
            Ty::V => Ty::V,
            Ty::P => Ty::R,
        }
    }

    /// The one-letter form (the enum's repr, used in lists such as `Found types: [R, P]`).
    pub fn letter(self) -> &'static str {
        match self {
            Ty::R => "R",
            Ty::I => "I",
            Ty::V => "V",
            Ty::P => "P",
        }
    }

    /// The long form (the enum's str, used where the library formats one type with `{}`).
    pub fn long(self) -> String {
        format!("PerMeshAxisLocalSpmdType.{}", self.letter())
    }

    /// The full English name (`Replicate`, ...).
    pub fn full_name(self) -> &'static str {
        match self {
            Ty::R => "Replicate",
            Ty::I => "Invariant",
            Ty::V => "Varying",
            Ty::P => "Partial",
        }
    }

    pub fn parse(s: &str) -> Option<Ty> {
        match s {
            "R" => Some(Ty::R),
            "I" => Some(Ty::I),
            "V" => Some(Ty::V),
            "P" => Some(Ty::P),
            _ => None,
        }
    }
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.letter())
    }
}

/// A type as collectives and conversions take it for `src` / `dst`: a local type, or `S(d)`,
/// a Varying that is also "concatenate along tensor dim d".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arg {
    T(Ty),
    S(i64),
}

pub const R: Arg = Arg::T(Ty::R);
pub const I: Arg = Arg::T(Ty::I);
pub const V: Arg = Arg::T(Ty::V);
pub const P: Arg = Arg::T(Ty::P);

#[allow(non_snake_case)]
pub fn S(d: i64) -> Arg {
    Arg::S(d)
}

impl Arg {
    /// The local type: S(d) is V.
    pub fn base(self) -> Ty {
        match self {
            Arg::T(t) => t,
            Arg::S(_) => Ty::V,
        }
    }

    pub fn is_shard(self) -> bool {
        matches!(self, Arg::S(_))
    }

    /// The library's `{}` form: `PerMeshAxisLocalSpmdType.R` or `S(0)`.
    pub fn long(self) -> String {
        match self {
            Arg::T(t) => t.long(),
            Arg::S(d) => format!("S({d})"),
        }
    }

    /// The short form: `R` or `S(0)`.
    pub fn short(self) -> String {
        match self {
            Arg::T(t) => t.letter().to_string(),
            Arg::S(d) => format!("S({d})"),
        }
    }

    pub fn parse(s: &str) -> Option<Arg> {
        if let Some(d) = s.strip_prefix("S(").and_then(|r| r.strip_suffix(')')) {
            return d.parse().ok().map(Arg::S);
        }
        Ty::parse(s).map(Arg::T)
    }

    /// Resolves a negative shard dim against `ndim`, as the library's canonicalisation does.
    pub fn canonical(self, ndim: usize) -> Result<Arg, String> {
        match self {
            Arg::S(d) if d < 0 => {
                if d < -(ndim as i64) {
                    Err(format!("S({d}) is out of bounds for tensor with ndim={ndim}"))
                } else {
                    Ok(Arg::S(d + ndim as i64))
                }
            }
            Arg::S(d) if d >= ndim as i64 => Err(format!("S({d}) is out of bounds for tensor with ndim={ndim}")),
            a => Ok(a),
        }
    }
}

impl From<Ty> for Arg {
    fn from(t: Ty) -> Arg {
        Arg::T(t)
    }
}

/// A tensor's local type: mesh axis index -> type. Axes of size 1 are never stored; an empty
/// map is an untyped tensor (`{}`).
pub type LocalType = BTreeMap<usize, Ty>;
