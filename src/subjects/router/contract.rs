//! Declared placement contracts, checked the way torchtitan checks them: resolve the layout on
//! the mesh (size-1 axes per [`Size1`]), then compare element-wise with shard dims normalised
//! (`check_dtensor_placements_match`): Partial(sum) != Replicate, Partial(sum) != Partial(avg).

use super::Size1;
use placement::{normalize_all, Mesh, Placement, PlacementError};

/// `resolve_placements`: what a declared layout means on this mesh.
pub fn resolve(contract: &[Placement], mesh: &Mesh, size1: Size1) -> Vec<Placement> {
    contract
        .iter()
        .enumerate()
        .map(|(md, &p)| {
            let trivial = mesh.dim_size(md) == 1;
            match p {
                _ if trivial && p.is_shard() => Placement::Replicate,
                Placement::Partial(_) if trivial && size1 == Size1::Normalize => Placement::Replicate,
                _ => p,
            }
        })
        .collect()
}

/// True when `actual` satisfies the resolved contract for a tensor of rank `ndim`.
pub fn matches(actual: &[Placement], resolved: &[Placement], ndim: usize) -> Result<bool, PlacementError> {
    Ok(actual.len() == resolved.len() && normalize_all(actual, ndim)? == normalize_all(resolved, ndim)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use placement::{Placement::*, ReduceOp};

    #[test]
    fn size1_normalisation_is_the_3762_fix() {
        let m = Mesh::new(vec![1, 2], vec!["dp_shard".into(), "tp".into()]).unwrap();
        let c = [Partial(ReduceOp::Sum), Replicate];
        assert_eq!(resolve(&c, &m, Size1::Keep), c.to_vec());
        assert_eq!(resolve(&c, &m, Size1::Normalize), vec![Replicate, Replicate]);
        assert_eq!(resolve(&[Shard(0), Shard(0)], &m, Size1::Keep), vec![Replicate, Shard(0)]);
        assert!(!matches(&[Replicate, Replicate], &resolve(&c, &m, Size1::Keep), 1).unwrap());
        assert!(matches(&[Replicate, Replicate], &resolve(&c, &m, Size1::Normalize), 1).unwrap());
        assert!(matches(&[Shard(-1)], &[Shard(0)], 1).unwrap());
        assert!(!matches(&[Partial(ReduceOp::Avg)], &[Partial(ReduceOp::Sum)], 1).unwrap());
    }
}
