//! Rows for one mesh dim and how PyTorch turns them into strategies over the whole mesh
//! (`_ops/single_dim_strategy.py`, `_ops/utils.py` `expand_to_full_mesh_op_strategy`; the same
//! in 2.12.1, 2.13.0 and 2.14.0).
//!
//! A single-dim strategy (`register_single_dim_strategy`) writes rows with placeholders,
//! [`Cell::Ph`]`(d)` = "a shard of tensor dim d, of whatever kind the inputs use". Expansion:
//! 1. the all-Replicate row is inserted first, unless the rows already have one
//!    (`_insert_single_dim_replication_strategy`);
//! 2. every row with a placeholder is repeated once per shard kind present among the inputs'
//!    placements on any mesh dim (`Shard`, and `_StridedShard` per split factor), in the order a
//!    Python `set` of those placements iterates ([`shard_kinds`]); with no shard kind present
//!    such rows disappear (`_fill_single_dim_strategy_placeholders`);
//! 3. the rows' cartesian product over mesh dims, mesh dim 0 most significant
//!    (`itertools.product`), which is the candidate order ties are broken by.
//!
//! A full-mesh strategy that calls `expand_to_full_mesh_op_strategy` itself (gather, scatter and
//! sort in 2.12/2.13) writes concrete rows, all-Replicate included where it wants one, and only
//! gets step 3 ([`full_mesh`]). Both then go through the same filters (`rules::select`).

use super::{Arg, Strategy};
use placement::{Placement, ReduceOp};

/// One entry of a single-mesh-dim row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cell {
    /// `_ShardingPlaceholder(d)`: a shard of tensor dim d, kind filled from the inputs.
    Ph(usize),
    Is(Placement),
}

pub use Cell::Ph;

/// `Replicate()` in a row.
pub const R: Cell = Cell::Is(Placement::Replicate);

/// `Partial(op)` in a row.
pub fn p(op: ReduceOp) -> Cell {
    Cell::Is(Placement::Partial(op))
}

/// An explicit `Shard(d)` in a row (full-mesh strategies, and single-dim rows that do not want
/// a `_StridedShard` version).
pub fn s(d: usize) -> Cell {
    Cell::Is(Placement::Shard(d as i64))
}

/// One row `[outs..., ins...]` for one mesh dim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub outs: Vec<Cell>,
    pub ins: Vec<Cell>,
}

impl Row {
    pub fn new(outs: &[Cell], ins: &[Cell]) -> Row {
        Row { outs: outs.to_vec(), ins: ins.to_vec() }
    }

    fn all_replicate(&self) -> bool {
        self.outs.iter().chain(&self.ins).all(|c| *c == R)
    }

    fn has_placeholder(&self) -> bool {
        self.outs.iter().chain(&self.ins).any(|c| matches!(c, Ph(_)))
    }

    fn fill(&self, kind: Placement) -> Vec<Placement> {
        self.outs.iter().chain(&self.ins).map(|c| fill_cell(*c, kind)).collect()
    }

    fn concrete(&self) -> Vec<Placement> {
        self.outs
            .iter()
            .chain(&self.ins)
            .map(|c| match c {
                Cell::Is(p) => *p,
                Ph(d) => panic!("placeholder Ph({d}) in a full-mesh row"),
            })
            .collect()
    }
}

fn fill_cell(c: Cell, kind: Placement) -> Placement {
    match c {
        Cell::Is(p) => p,
        Ph(d) => kind.with_dim(d as i64),
    }
}

/// PyTorch's hash of a placement, where it is not salted: `Shard(d)` hashes as `d`,
/// `_StridedShard(d, sf)` as the tuple `(d, sf)`, `Replicate()` as -2. Partials hash their
/// reduce-op string, which Python salts per process, so their position cannot be reproduced.
fn py_hash(p: Placement) -> Option<i64> {
    match p {
        Placement::Shard(d) => Some(d),
        Placement::StridedShard { dim, sf } => Some(tuple_hash(&[dim, sf as i64])),
        Placement::Replicate => Some(-2),
        Placement::Partial(_) | Placement::MaskPartial { .. } => None,
    }
}

/// CPython 3.11 `tuplehash` (xxHash lanes) of small non-negative ints, which hash to themselves.
fn tuple_hash(items: &[i64]) -> i64 {
    const P1: u64 = 11400714785074694791;
    const P2: u64 = 14029467366897019727;
    const P5: u64 = 2870177450012600261;
    let mut acc = P5;
    for &x in items {
        acc = acc.wrapping_add((x as u64).wrapping_mul(P2));
        acc = acc.rotate_left(31);
        acc = acc.wrapping_mul(P1);
    }
    acc = acc.wrapping_add(items.len() as u64 ^ (P5 ^ 3527539));
    if acc == u64::MAX {
        return 1546275796;
    }
    acc as i64
}

/// The iteration order of a CPython 3.11 `set` built by adding `items` in order (open
/// addressing: slot `hash & mask`, one probe per round on small tables, then perturbation; the
/// table grows to 32 slots at the fifth entry).
fn py_set_order(items: &[(i64, Placement)]) -> Vec<Placement> {
    let mut table: Vec<Option<(i64, Placement)>> = vec![None; 8];
    let mut used = 0usize;
    for &(h, p) in items {
        if table.iter().flatten().any(|&(_, q)| q == p) {
            continue;
        }
        insert_clean(&mut table, h, p);
        used += 1;
        if used * 5 >= (table.len() - 1) * 3 {
            let mut size = 8;
            while size <= used * 4 {
                size <<= 1;
            }
            let old = std::mem::replace(&mut table, vec![None; size]);
            for (h, p) in old.into_iter().flatten() {
                insert_clean(&mut table, h, p);
            }
        }
    }
    table.into_iter().flatten().map(|(_, p)| p).collect()
}

fn insert_clean(table: &mut [Option<(i64, Placement)>], h: i64, p: Placement) {
    const LINEAR_PROBES: usize = 9;
    let mask = table.len() - 1;
    let mut perturb = h as u64;
    let mut i = (h as u64 as usize) & mask;
    loop {
        let probes = if i + LINEAR_PROBES <= mask { LINEAR_PROBES } else { 0 };
        for j in 0..=probes {
            if table[i + j].is_none() {
                table[i + j] = Some((h, p));
                return;
            }
        }
        perturb >>= 5;
        i = (i.wrapping_mul(5).wrapping_add(1).wrapping_add(perturb as usize)) & mask;
    }
}

/// The shard kinds placeholders are filled with (`Shard(0)` stands for plain `Shard`,
/// `_S(0, sf)` for each split factor), in the order PyTorch builds them: first appearance in
/// the iteration of `set(placements of every input)` (`_get_unique_placements`).
pub(crate) fn shard_kinds(args: &[Arg]) -> Vec<Placement> {
    let items: Vec<(i64, Placement)> =
        args.iter().flat_map(|a| &a.placements).filter_map(|&p| py_hash(p).map(|h| (h, p))).collect();
    let mut kinds: Vec<Placement> = Vec::new();
    for p in py_set_order(&items) {
        let k = match p {
            Placement::Shard(_) => Placement::Shard(0),
            Placement::StridedShard { sf, .. } => Placement::StridedShard { dim: 0, sf },
            _ => continue,
        };
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    kinds
}

/// Rows of a single-dim strategy for one mesh dim, after steps 1 and 2, as flat
/// `[outs..., ins...]` placements (`n_out` outputs, one input per argument).
pub(crate) fn filled_rows(rows: &[Row], n_out: usize, args: &[Arg]) -> Vec<Vec<Placement>> {
    let kinds = shard_kinds(args);
    let mut out = Vec::with_capacity(rows.len() * (1 + kinds.len()) + 1);
    if !rows.iter().any(Row::all_replicate) {
        out.push(vec![Placement::Replicate; n_out + args.len()]);
    }
    for row in rows {
        if row.has_placeholder() {
            out.extend(kinds.iter().map(|&k| row.fill(k)));
        } else {
            out.push(row.fill(Placement::Replicate));
        }
    }
    out
}

/// A single-dim strategy expanded over the mesh (steps 1 to 3). `n_out` splits each row.
pub(crate) fn single_dim(rows: &[Row], n_out: usize, args: &[Arg], mesh_ndim: usize) -> Vec<Strategy> {
    product(&filled_rows(rows, n_out, args), n_out, mesh_ndim)
}

/// Concrete rows of a full-mesh strategy expanded over the mesh (step 3 only).
pub(crate) fn full_mesh(rows: &[Row], mesh_ndim: usize) -> Vec<Strategy> {
    let n_out = rows.first().map_or(0, |r| r.outs.len());
    product(&rows.iter().map(Row::concrete).collect::<Vec<_>>(), n_out, mesh_ndim)
}

/// Cartesian product of flat rows over `mesh_ndim` mesh dims, the first mesh dim varying
/// slowest (itertools.product order).
pub fn product(rows: &[Vec<Placement>], n_out: usize, mesh_ndim: usize) -> Vec<Strategy> {
    let Some(width) = rows.first().map(Vec::len) else { return Vec::new() };
    let total = rows.len().pow(mesh_ndim as u32);
    let mut out = Vec::with_capacity(total);
    let mut pick = vec![0; mesh_ndim];
    for mut code in 0..total {
        for md in (0..mesh_ndim).rev() {
            pick[md] = code % rows.len();
            code /= rows.len();
        }
        let spec = |k: usize| -> Vec<Placement> { pick.iter().map(|&r| rows[r][k]).collect() };
        out.push(Strategy { outs: (0..n_out).map(spec).collect(), ins: (n_out..width).map(spec).collect() });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{DType, Meta};
    use placement::Placement::*;

    fn arg(ps: &[Placement]) -> Arg {
        Arg { meta: Meta::new(vec![8, 8, 8, 8], DType::F32), placements: ps.to_vec() }
    }

    /// Hashes checked with `hash(_StridedShard(d, split_factor=sf))` on torch 2.12.1/2.13.0/2.14.0.
    #[test]
    fn strided_shard_hashes_like_a_tuple() {
        assert_eq!(tuple_hash(&[0, 2]), 7204814214171964562);
        assert_eq!(tuple_hash(&[1, 2]), -3550055125485641917);
        assert_eq!(tuple_hash(&[0, 1]), -1950498447580522560);
    }

    /// `list({Shard(3), _StridedShard(0, sf=2)})` is `[_S(0,2), S(3)]` on real PyTorch (slot 2
    /// before slot 3), `list({_S(0,2), Shard(0)})` is `[S(0), _S(0,2)]` (research §1.2).
    #[test]
    fn builder_order_is_python_set_order() {
        let sf2 = StridedShard { dim: 0, sf: 2 };
        assert_eq!(shard_kinds(&[arg(&[Shard(3), sf2])]), vec![sf2, Shard(0)]);
        assert_eq!(shard_kinds(&[arg(&[sf2, Shard(0)])]), vec![Shard(0), sf2]);
        // Golden 13's mm: x2 [_S(0,2), S(1)], Wt [R, S(1)] -> Shard first.
        assert_eq!(shard_kinds(&[arg(&[sf2, Shard(1)]), arg(&[Replicate, Shard(1)])]), vec![Shard(0), sf2]);
        assert!(shard_kinds(&[arg(&[Replicate, Partial(ReduceOp::Sum)])]).is_empty());
    }

    #[test]
    fn all_replicate_first_and_placeholder_rows_per_kind() {
        let rows = [Row::new(&[p(ReduceOp::Sum)], &[Ph(1), Ph(0)]), Row::new(&[Ph(0)], &[Ph(0), R])];
        let sf2 = StridedShard { dim: 0, sf: 2 };
        let filled = filled_rows(&rows, 1, &[arg(&[Shard(0)]), arg(&[sf2])]);
        assert_eq!(filled[0], vec![Replicate; 3]);
        assert_eq!(filled[1], vec![Partial(ReduceOp::Sum), Shard(1), Shard(0)]);
        assert_eq!(filled[2], vec![Partial(ReduceOp::Sum), StridedShard { dim: 1, sf: 2 }, sf2]);
        assert_eq!(filled.len(), 5);
        // No shard among the inputs: placeholder rows disappear.
        assert_eq!(filled_rows(&rows, 1, &[arg(&[Replicate]), arg(&[Replicate])]), vec![vec![Replicate; 3]]);
        // No rows at all (a 1-D sort along its only dim): all-R alone.
        assert_eq!(filled_rows(&[], 2, &[arg(&[Shard(0)])]), vec![vec![Replicate; 3]]);
    }

    #[test]
    fn product_has_the_first_mesh_dim_slowest() {
        let rows = [vec![Replicate, Replicate], vec![Shard(0), Shard(0)]];
        let outs: Vec<Vec<Placement>> = product(&rows, 1, 2).into_iter().map(|s| s.outs[0].clone()).collect();
        assert_eq!(
            outs,
            vec![
                vec![Replicate, Replicate],
                vec![Replicate, Shard(0)],
                vec![Shard(0), Replicate],
                vec![Shard(0), Shard(0)]
            ]
        );
    }
}
