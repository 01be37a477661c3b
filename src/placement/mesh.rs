//! The device mesh: named dims, row-major rank coordinates, and the fiber (process group) of
//! each mesh dim. Ranks are `0..size` laid out as `arange(size).view(shape)`.

use super::PlacementError;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Mesh {
    shape: Vec<usize>,
    names: Vec<String>,
    /// fibers[d][f] = ranks of fiber f of mesh dim d, ordered by their coordinate along d.
    fibers: Vec<Vec<Vec<usize>>>,
}

impl Mesh {
    pub fn new(shape: Vec<usize>, names: Vec<String>) -> Result<Mesh, PlacementError> {
        if shape.is_empty() {
            return Err(PlacementError::BadMesh("a mesh needs at least one dim".into()));
        }
        if let Some(d) = shape.iter().position(|&s| s == 0) {
            return Err(PlacementError::BadMesh(format!(
                "mesh dim {d} has size 0; every mesh dim needs at least 1 rank"
            )));
        }
        if names.len() != shape.len() {
            return Err(PlacementError::BadMesh("mesh_shape and mesh_dim_names should have same length!".into()));
        }
        for (i, n) in names.iter().enumerate() {
            if names[..i].contains(n) {
                return Err(PlacementError::BadMesh(format!("mesh dim names must be unique, '{n}' appears twice")));
            }
        }
        let size: usize = shape.iter().product();
        let mut m = Mesh { shape, names, fibers: Vec::new() };
        m.fibers = (0..m.ndim())
            .map(|d| {
                let mut groups: Vec<Vec<usize>> = Vec::new();
                for r in 0..size {
                    if m.coord(r)[d] == 0 {
                        groups.push((0..m.shape[d]).map(|i| m.rank_with(r, d, i)).collect());
                    }
                }
                groups
            })
            .collect();
        Ok(m)
    }

    /// A 1-D mesh named `tp` (handy in tests).
    pub fn tp(n: usize) -> Mesh {
        Mesh::new(vec![n], vec!["tp".into()]).expect("valid mesh")
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn names(&self) -> &[String] {
        &self.names
    }
    pub fn ndim(&self) -> usize {
        self.shape.len()
    }
    pub fn size(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn dim_size(&self, d: usize) -> usize {
        self.shape[d]
    }

    /// Row-major coordinate of `rank`: `coord[d] = (rank / prod(shape[d+1..])) % shape[d]`.
    pub fn coord(&self, rank: usize) -> Vec<usize> {
        let mut c = vec![0; self.ndim()];
        let mut r = rank;
        for d in (0..self.ndim()).rev() {
            c[d] = r % self.shape[d];
            r /= self.shape[d];
        }
        c
    }

    pub(crate) fn rank_of(&self, coord: &[usize]) -> usize {
        coord.iter().zip(&self.shape).fold(0, |acc, (&c, &s)| acc * s + c)
    }

    /// The rank whose coordinate equals `rank`'s except along `d`, where it is `i`.
    fn rank_with(&self, rank: usize, d: usize, i: usize) -> usize {
        let mut c = self.coord(rank);
        c[d] = i;
        self.rank_of(&c)
    }

    /// Every process group of mesh dim `d`: ranks equal on all other dims, in coordinate order.
    pub fn fibers(&self, d: usize) -> &[Vec<usize>] {
        &self.fibers[d]
    }

    /// PyTorch's mesh repr in error texts, e.g. `DeviceMesh((dp_shard=1, tp=2), device: 'cpu', stride: (2, 1))`.
    pub fn repr(&self, device: &str) -> String {
        let dims: Vec<String> = self.names.iter().zip(&self.shape).map(|(n, s)| format!("{n}={s}")).collect();
        let mut strides = vec![1usize; self.ndim()];
        for d in (0..self.ndim().saturating_sub(1)).rev() {
            strides[d] = strides[d + 1] * self.shape[d + 1];
        }
        let strides: Vec<String> = strides.iter().map(|s| s.to_string()).collect();
        let stride =
            if strides.len() == 1 { format!("({},)", strides[0]) } else { format!("({})", strides.join(", ")) };
        let dims = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
        format!("DeviceMesh({dims}, device: '{device}', stride: {stride})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinates_are_row_major() {
        let m = Mesh::new(vec![2, 3], vec!["dp".into(), "tp".into()]).unwrap();
        assert_eq!(m.coord(0), vec![0, 0]);
        assert_eq!(m.coord(4), vec![1, 1]);
        assert_eq!(m.coord(5), vec![1, 2]);
        for r in 0..6 {
            assert_eq!(m.rank_of(&m.coord(r)), r);
        }
    }

    #[test]
    fn fibers_group_ranks_that_differ_on_one_dim() {
        let m = Mesh::new(vec![2, 3], vec!["dp".into(), "tp".into()]).unwrap();
        assert_eq!(m.fibers(1), &[vec![0, 1, 2], vec![3, 4, 5]]);
        assert_eq!(m.fibers(0), &[vec![0, 3], vec![1, 4], vec![2, 5]]);
        let m3 = Mesh::new(vec![2, 1, 2], vec!["a".into(), "b".into(), "c".into()]).unwrap();
        assert_eq!(m3.fibers(0), &[vec![0, 2], vec![1, 3]]);
        assert_eq!(m3.fibers(1), &[vec![0], vec![1], vec![2], vec![3]]);
    }

    #[test]
    fn invalid_meshes_are_rejected() {
        assert!(Mesh::new(vec![], vec![]).is_err());
        assert!(Mesh::new(vec![2, 0], vec!["a".into(), "b".into()]).is_err());
        assert!(Mesh::new(vec![2, 2], vec!["a".into(), "a".into()]).is_err());
        assert!(Mesh::new(vec![2], vec!["a".into(), "b".into()]).is_err());
    }

    #[test]
    fn repr_names_dims_and_strides() {
        let m = Mesh::new(vec![1, 2], vec!["dp_shard".into(), "tp".into()]).unwrap();
        assert_eq!(m.repr("cpu"), "DeviceMesh((dp_shard=1, tp=2), device: 'cpu', stride: (2, 1))");
    }
}
