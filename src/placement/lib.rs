//! Placement algebra: how a tensor is laid out over a device mesh, as plain data.
//!
//! Nothing in `placement/` touches libtorch (its Cargo.toml has no such dependency): meshes, torch.chunk layouts,
//! redistribution plans and costs are pure functions, fast to test and to fuzz.
//!
//! Placements print two ways, as PyTorch's do: the short form `R`, `S(1)`, `_S(0,2)`, `P(sum)`
//! (case files, tables) and the machine-readable repr `Shard(dim=1)` used in PyTorch's error texts.

pub mod cost;
pub mod error;
pub mod layout;
pub mod mesh;
pub mod plan;
pub mod step;

pub use error::PlacementError;
pub use mesh::Mesh;

use std::fmt;
use std::str::FromStr;

names::named_enum! {
    /// Reduction of a `Partial` placement.
    pub enum ReduceOp("reduce op") {
        Sum = "sum",
        Avg = "avg",
        Max = "max",
        Min = "min",
        Product = "product",
    }
}

impl ReduceOp {
    /// sum and avg commute with linear ops (PyTorch's `LINEAR_REDUCE_OPS`).
    pub fn is_linear(self) -> bool {
        matches!(self, ReduceOp::Sum | ReduceOp::Avg)
    }
}

/// How one mesh dim lays a tensor out. `Shard` dims may be negative until normalised
/// against a tensor's rank ([`Placement::normalized`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Placement {
    Replicate,
    Shard(i64),
    /// `_StridedShard(dim, split_factor)`: chunk the dim into `sf` pieces, chunk each piece over
    /// the mesh dim, and give shard `i` the concatenation of every piece's `i`-th chunk.
    StridedShard {
        dim: i64,
        sf: usize,
    },
    Partial(ReduceOp),
    /// `_MaskPartial(offset_shape, offset_dim)`, which gather offers for an index of size 1 on a
    /// sharded gather dim: a Partial(sum) whose reduction first zeroes what each rank gathered
    /// for indices outside its shard. `size` is `offset_shape[dim]`; `id` names the mask buffer,
    /// which PyTorch compares by identity (0: not yet given one, see `MaskPartial::FRESH`).
    MaskPartial {
        id: u32,
        dim: u32,
        size: u64,
    },
}

use Placement::*;

/// The id a strategy gives a `_MaskPartial` it creates; the dispatcher replaces it with a new
/// buffer's id once the strategy is chosen.
pub const FRESH_MASK: u32 = 0;

impl Placement {
    pub fn is_shard(self) -> bool {
        matches!(self, Shard(_) | StridedShard { .. })
    }
    pub fn is_partial(self) -> bool {
        matches!(self, Partial(_) | MaskPartial { .. })
    }
    /// The reduction of a Partial (`_MaskPartial` reduces by sum).
    pub fn reduce_op(self) -> Option<ReduceOp> {
        match self {
            Partial(op) => Some(op),
            MaskPartial { .. } => Some(ReduceOp::Sum),
            _ => None,
        }
    }
    /// PyTorch's `Placement.is_shard()`: plain `Shard` only, not `_StridedShard`.
    pub(crate) fn is_plain_shard(self) -> bool {
        matches!(self, Shard(_))
    }
    pub fn is_replicate(self) -> bool {
        matches!(self, Replicate)
    }
    /// The tensor dim a shard-like placement splits.
    pub fn shard_dim(self) -> Option<i64> {
        match self {
            Shard(d) | StridedShard { dim: d, .. } => Some(d),
            _ => None,
        }
    }
    /// True when this shards tensor dim `d` (plain or strided).
    pub fn shards(self, d: i64) -> bool {
        self.shard_dim() == Some(d)
    }
    pub fn with_dim(self, d: i64) -> Placement {
        match self {
            Shard(_) => Shard(d),
            StridedShard { sf, .. } => StridedShard { dim: d, sf },
            p => p,
        }
    }

    /// Resolves a negative shard dim against a tensor of rank `ndim`.
    pub fn normalized(self, ndim: usize) -> Result<Placement, PlacementError> {
        match self.shard_dim() {
            None => Ok(self),
            Some(d) => {
                let n = ndim as i64;
                let nd = if d < 0 { d + n } else { d };
                if nd < 0 || nd >= n {
                    Err(PlacementError::ShardDimOutOfRange { placement: self, ndim })
                } else {
                    Ok(self.with_dim(nd))
                }
            }
        }
    }

    /// PyTorch's `repr`: `Replicate()`, `Shard(dim=1)`, `_StridedShard(dim=0, sf=2)`, `Partial(sum)`.
    pub fn repr(self) -> String {
        match self {
            Replicate => "Replicate()".into(),
            Shard(d) => format!("Shard(dim={d})"),
            StridedShard { dim, sf } => format!("_StridedShard(dim={dim}, sf={sf})"),
            Partial(op) => format!("Partial({})", op.name()),
            MaskPartial { dim, .. } => format!("_MaskPartial(reduce_op=sum, offset_dim={dim})"),
        }
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Replicate => write!(f, "R"),
            Shard(d) => write!(f, "S({d})"),
            StridedShard { dim, sf } => write!(f, "_S({dim},{sf})"),
            // Real outcomes print any Partial subclass by its reduce op (router_oracle.py).
            Partial(op) => write!(f, "P({})", op.name()),
            MaskPartial { .. } => write!(f, "P(sum)"),
        }
    }
}

impl FromStr for Placement {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("bad placement '{s}' (expected R, S(d), P(sum|avg|max|min|product) or _S(d,sf))");
        let s = s.trim();
        if s == "R" {
            return Ok(Replicate);
        }
        let inner = |prefix: &str| s.strip_prefix(prefix).and_then(|r| r.strip_suffix(')'));
        if let Some(d) = inner("S(") {
            return d.trim().parse::<i64>().map(Shard).map_err(|_| bad());
        }
        if let Some(args) = inner("_S(") {
            let (d, sf) = args.split_once(',').ok_or_else(bad)?;
            let dim = d.trim().parse::<i64>().map_err(|_| bad())?;
            let sf = sf.trim().parse::<usize>().map_err(|_| bad())?;
            return if sf >= 1 { Ok(StridedShard { dim, sf }) } else { Err(bad()) };
        }
        if let Some(op) = inner("P(") {
            return op.trim().parse::<ReduceOp>().map(Partial).map_err(|_| bad());
        }
        Err(bad())
    }
}

/// PyTorch's repr of a placements tuple: `(Shard(dim=1),)`, `(Replicate(), Shard(dim=1))`.
pub fn repr_tuple(ps: &[Placement]) -> String {
    let items: Vec<String> = ps.iter().map(|p| p.repr()).collect();
    if items.len() == 1 {
        format!("({},)", items[0])
    } else {
        format!("({})", items.join(", "))
    }
}

/// The short form of a placements list: `[R, S(1)]`.
pub fn short_list(ps: &[Placement]) -> String {
    let items: Vec<String> = ps.iter().map(|p| p.to_string()).collect();
    format!("[{}]", items.join(", "))
}

/// Normalises every shard dim of a placements list against a tensor of rank `ndim`.
pub fn normalize_all(ps: &[Placement], ndim: usize) -> Result<Vec<Placement>, PlacementError> {
    ps.iter().map(|p| p.normalized(ndim)).collect()
}

// Placements travel in case files as their short strings (`"S(1)"`, `"P(sum)"`).
names::serde_as_str!(Placement);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print_round_trip() {
        for s in ["R", "S(0)", "S(-1)", "P(sum)", "P(avg)", "P(max)", "P(min)", "P(product)", "_S(0,2)"] {
            let p: Placement = s.parse().unwrap();
            assert_eq!(p.to_string(), s);
        }
        assert!("S(x)".parse::<Placement>().is_err());
        assert!("P(mean)".parse::<Placement>().is_err());
        assert!("Shard(1)".parse::<Placement>().is_err());
        assert!("_S(0,0)".parse::<Placement>().is_err());
    }

    #[test]
    fn repr_matches_pytorch() {
        assert_eq!(repr_tuple(&[Shard(1)]), "(Shard(dim=1),)");
        assert_eq!(repr_tuple(&[Replicate, Shard(1)]), "(Replicate(), Shard(dim=1))");
        assert_eq!(repr_tuple(&[Partial(ReduceOp::Sum), Replicate]), "(Partial(sum), Replicate())");
    }

    #[test]
    fn negative_dims_normalise() {
        assert_eq!(Shard(-1).normalized(3).unwrap(), Shard(2));
        assert_eq!(Shard(2).normalized(3).unwrap(), Shard(2));
        assert!(Shard(3).normalized(3).is_err());
        assert!(Shard(-4).normalized(3).is_err());
        assert_eq!(Replicate.normalized(0).unwrap(), Replicate);
    }
}
