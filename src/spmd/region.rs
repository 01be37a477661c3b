//! Cross-mesh retagging (`reinterpret_mesh`) and the one global-mode typing rule the MoE layer
//! needs (a sum over token dims sharded on an axis leaves a pending sum there).
//!
//! Two meshes over the same ranks describe each axis by its rank layout (size and stride in
//! the row-major rank numbering). `reinterpret_mesh` keeps the type of every axis both meshes
//! share (same layout) and folds the others group by group: walked outermost first, a group
//! of source axes and a group of destination axes meet when their sizes multiply to the same
//! number; they must cover the same ranks, and the source group must carry one type, which
//! every destination axis of the group then gets. The data is untouched (an alias), so the
//! gradient passes through unchanged.

use crate::error::{Result, SpmdError};
use crate::mesh::SpmdMesh;
use crate::types::{LocalType, Ty};
use crate::{STensor, Spmd};

impl SpmdMesh {
    /// The stride of an axis in the row-major rank numbering.
    pub fn stride(&self, axis: usize) -> usize {
        (axis + 1..self.ndim()).map(|a| self.size(a)).product()
    }

    /// The rank offsets a group of axes spans (sorted).
    fn region(&self, axes: &[usize]) -> Vec<usize> {
        let mut offs = vec![0usize];
        for &a in axes {
            let s = self.stride(a);
            offs = offs.iter().flat_map(|o| (0..self.size(a)).map(move |i| o + i * s)).collect();
        }
        offs.sort_unstable();
        offs
    }
}

/// One side of the walk: (axis, size, stride, type) sorted by stride, outermost first.
fn sorted(mesh: &SpmdMesh, axes: impl Iterator<Item = (usize, Option<Ty>)>) -> Vec<(usize, usize, usize, Option<Ty>)> {
    let mut v: Vec<_> = axes.map(|(a, t)| (a, mesh.size(a), mesh.stride(a), t)).collect();
    v.sort_by(|x, y| y.2.cmp(&x.2).then(x.0.cmp(&y.0)));
    v
}

impl Spmd {
    /// `reinterpret_mesh(x, mesh)` with the destination given as a mesh (the axes-only form
    /// torchtitan uses with `spmd.current_mesh()`): `x`'s type on the current mesh, retagged
    /// onto `dst`'s axes. Errors are the library's `SpmdTypeError`s (axis names as `dst` and the
    /// current mesh display them).
    pub fn reinterpret_mesh(&self, x: &STensor, dst: &SpmdMesh) -> Result<STensor> {
        let src_mesh = self.mesh();
        if x.ty.is_empty() && self.checking {
            return Err(SpmdError::Type("reinterpret_mesh requires a tensor with an existing local SPMD type.".into()));
        }
        let layout = |m: &SpmdMesh, a: usize| (m.size(a), m.stride(a));
        let dst_axes: Vec<usize> = dst.typed_axes_in_mesh_order();
        let mut out = LocalType::new();
        let mut src_rest = Vec::new();
        for (&a, &t) in &x.ty {
            match dst_axes.iter().find(|&&b| layout(dst, b) == layout(src_mesh, a)) {
                Some(&b) => {
                    out.insert(b, t);
                }
                None => src_rest.push((a, Some(t))),
            }
        }
        let dst_rest: Vec<usize> = dst_axes
            .iter()
            .copied()
            .filter(|b| !x.ty.keys().any(|&a| layout(dst, *b) == layout(src_mesh, a)))
            .collect();
        if src_rest.is_empty() {
            self.alias(x)?;
            return Ok(STensor { ty: out, ..x.clone() });
        }
        if dst_rest.is_empty() {
            let mut names: Vec<&str> = src_rest.iter().map(|(a, _)| src_mesh.shown(*a)).collect();
            names.sort();
            let mut dnames: Vec<&str> = dst_axes.iter().map(|&b| dst.shown(b)).collect();
            dnames.sort();
            return Err(SpmdError::Type(format!(
                "Operand has axes [{}] not in the current mesh [{}] and has no destination to fold into.",
                names.join(", "),
                dnames.join(", ")
            )));
        }
        let src_sorted = sorted(src_mesh, src_rest.into_iter());
        let dst_sorted = sorted(dst, dst_rest.into_iter().map(|b| (b, None)));
        self.walk(&src_sorted, &dst_sorted, dst, &mut out)?;
        self.alias(x)?;
        Ok(STensor { ty: out, ..x.clone() })
    }

    /// The library retags an alias of the tensor (`aten.alias`), an op the checker types as
    /// nonlinear: a P on any axis is rejected there, after the mesh checks.
    fn alias(&self, x: &STensor) -> Result<()> {
        if self.checking {
            self.op_type(&crate::ops::OpSpec::nonlinear("alias"), &[&x.ty])?;
        }
        Ok(())
    }

    /// The two-pointer walk over both sides' remaining axes (the library's `_walk_groups`).
    fn walk(
        &self,
        src: &[(usize, usize, usize, Option<Ty>)],
        dst: &[(usize, usize, usize, Option<Ty>)],
        dst_mesh: &SpmdMesh,
        out: &mut LocalType,
    ) -> Result<()> {
        let (mut i, mut j, mut sc, mut dc) = (0, 0, 1usize, 1usize);
        let (mut sg, mut dg): (Vec<usize>, Vec<usize>) = (Vec::new(), Vec::new());
        let mut st: Option<Ty> = None;
        let name =
            |m: &SpmdMesh, g: &[usize]| format!("{{{}}}", g.iter().map(|&a| m.shown(a)).collect::<Vec<_>>().join(", "));
        while i < src.len() || j < dst.len() {
            if sc <= dc && i < src.len() {
                let (a, size, _, t) = src[i];
                sc *= size;
                sg.push(a);
                match st {
                    None => st = t,
                    Some(prev) if Some(prev) != t => {
                        let prior: Vec<&str> = sg[..sg.len() - 1].iter().map(|&p| self.mesh().shown(p)).collect();
                        return Err(SpmdError::Type(format!(
                            "Axes {} would need to be flattened, but {} {} type {} while {} has type {}. Check that \
                             the operand has the local SPMD types you expect and that the current mesh is correct for \
                             this region of code.",
                            name(self.mesh(), &sg),
                            prior.join(", "),
                            if sg.len() <= 2 { "has" } else { "have" },
                            prev.letter(),
                            self.mesh().shown(a),
                            t.map_or("?", |t| t.letter())
                        )));
                    }
                    _ => {}
                }
                i += 1;
            } else if j < dst.len() {
                dc *= dst[j].1;
                dg.push(dst[j].0);
                j += 1;
            } else {
                break;
            }
            if sc == dc {
                if self.mesh().region(&sg) != dst_mesh.region(&dg) {
                    return Err(SpmdError::Type(format!(
                        "Source group {} and destination group {} flatten to different rank regions. Set \
                         MESH_AXIS_DEBUG=1 to see underlying size/stride layouts.",
                        name(self.mesh(), &sg),
                        name(dst_mesh, &dg)
                    )));
                }
                for &b in &dg {
                    out.insert(b, st.expect("a typed source group"));
                }
                (sc, dc, st) = (1, 1, None);
                sg.clear();
                dg.clear();
            }
        }
        if sc != 1 || dc != 1 {
            return Err(SpmdError::Type(
                "The source and destination meshes do not appear to be related. Set MESH_AXIS_DEBUG=1 to see \
                 underlying size/stride layouts."
                    .into(),
            ));
        }
        Ok(())
    }

    /// Global mode's typing of `sum(x, dims)` where `x`'s dim `d` is sharded on axis `a`
    /// (`shards` lists the (axis name, tensor dim) pairs of its PartitionSpec): the local rule
    /// (LINEAR) first, then every axis whose sharded dim is summed becomes P, a pending sum
    /// over that axis (in local mode such a sum stays V).
    pub fn sum_sharded(&mut self, x: &STensor, dims: &[i64], shards: &[(&str, i64)]) -> Result<STensor> {
        let mut out = self.sum(x, dims, false)?;
        for (name, d) in shards {
            let a = self.mesh().axis(name)?;
            if dims.contains(d) && out.ty.get(&a) == Some(&Ty::V) {
                out.ty.insert(a, Ty::P);
            }
        }
        Ok(out)
    }
}

impl Spmd {
    /// The output boundary of `local_map`: the declared types asserted on the body's result,
    /// axis by axis (size-1 axes skipped), as the library's `assert_type` refines: the same
    /// type, or V declared P (a per-rank value declared a pending sum), else the mismatch.
    pub fn stamp(&self, x: &mut STensor, types: &[(&str, crate::types::Arg)]) -> Result<()> {
        for (name, t) in types {
            let a = self.mesh().axis(name)?;
            if self.mesh().size(a) == 1 {
                continue;
            }
            let want = t.base();
            match x.ty.get(&a) {
                Some(&cur) if self.checking && cur != want && !(cur == Ty::V && want == Ty::P) => {
                    return Err(SpmdError::Type(format!(
                        "SPMD type mismatch on axis {}: tensor has {}, expected {}",
                        self.mesh().shown(a),
                        cur.long(),
                        want.long()
                    )))
                }
                _ => {
                    x.ty.insert(a, want);
                }
            }
        }
        Ok(())
    }
}
