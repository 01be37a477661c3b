//! The mesh the types refer to: named axes over simulated ranks, and the names the library
//! shows for them in messages.

use crate::error::{Result, SpmdError};
use placement::Mesh;

/// A device mesh for local-SPMD typing. Ranks are numbered row-major over the axes.
#[derive(Clone, Debug)]
pub struct SpmdMesh {
    pub mesh: Mesh,
    /// How the library prints each axis: the process group's description, `mesh_<name>` for
    /// a dimension of a multi-dimensional DeviceMesh and `default_pg` for a one-dimensional
    /// mesh (its only group is the world group).
    pub display: Vec<String>,
}

impl SpmdMesh {
    /// A mesh from (name, size) pairs, with the display names a DeviceMesh built by
    /// `init_device_mesh` gets.
    pub fn new(axes: &[(&str, usize)]) -> Result<SpmdMesh> {
        let shape: Vec<usize> = axes.iter().map(|a| a.1).collect();
        let names: Vec<String> = axes.iter().map(|a| a.0.to_string()).collect();
        let mesh = Mesh::new(shape.clone(), names.clone()).map_err(|e| SpmdError::Value(format!("{e:?}")))?;
        // An axis whose group is every rank is the default process group (recorded on a 1 x 1 x 2
        // mesh as on a one-dimensional one).
        let world: usize = shape.iter().product();
        let display =
            names
                .iter()
                .zip(&shape)
                .map(|(n, &s)| {
                    if axes.len() == 1 || (s == world && s > 1) {
                        "default_pg".to_string()
                    } else {
                        format!("mesh_{n}")
                    }
                })
                .collect();
        Ok(SpmdMesh { mesh, display })
    }

    /// The same mesh with explicit display names (e.g. the names torchtitan's groups carry).
    pub fn with_display(mut self, display: Vec<String>) -> SpmdMesh {
        assert_eq!(display.len(), self.mesh.ndim());
        self.display = display;
        self
    }

    pub fn ranks(&self) -> usize {
        self.mesh.size()
    }

    pub fn ndim(&self) -> usize {
        self.mesh.ndim()
    }

    pub fn size(&self, axis: usize) -> usize {
        self.mesh.dim_size(axis)
    }

    /// The axis with this name (as `"tp"`), or the library's error for an unknown name.
    pub fn axis(&self, name: &str) -> Result<usize> {
        if let Some(i) = self.mesh.names().iter().position(|n| n == name) {
            return Ok(i);
        }
        let mut avail: Vec<&str> = self.mesh.names().iter().map(|s| s.as_str()).collect();
        avail.sort();
        Err(SpmdError::Type(format!(
            "No mesh axis named '{name}' in the current mesh. Available: {}",
            avail.join(", ")
        )))
    }

    pub fn name(&self, axis: usize) -> &str {
        &self.mesh.names()[axis]
    }

    pub fn shown(&self, axis: usize) -> &str {
        &self.display[axis]
    }

    /// The axes of size > 1 (the only ones types are kept on), in display-name order.
    pub fn typed_axes(&self) -> Vec<usize> {
        let mut v: Vec<usize> = (0..self.ndim()).filter(|&a| self.size(a) > 1).collect();
        v.sort_by(|a, b| self.display[*a].cmp(&self.display[*b]));
        v
    }

    /// A rank's index along `axis`.
    pub fn coord(&self, rank: usize, axis: usize) -> usize {
        self.mesh.coord(rank)[axis]
    }

    /// The groups of ranks along `axis`, each in axis order.
    pub fn fibers(&self, axis: usize) -> &[Vec<usize>] {
        self.mesh.fibers(axis)
    }

    /// `{a, b}` with the display names in sorted order, as the library prints axis sets.
    pub fn axis_set<'a>(&self, axes: impl IntoIterator<Item = &'a usize>) -> String {
        let mut names: Vec<&str> = axes.into_iter().map(|&a| self.shown(a)).collect();
        names.sort();
        format!("{{{}}}", names.join(", "))
    }
}
