//! View ops (`_view_ops.py` `reshape_strategy`, a full-mesh strategy in every release): `view`,
//! `_unsafe_view` (strict: they may not redistribute silently from torch 2.13 on), `unsqueeze`
//! and `expand` (not strict). Partials pass through every one of them.
//!
//! A view is first decomposed into, for each output dim, where it comes from ([`Dim`]): an
//! input dim as is, several input dims flattened, one piece of a split, or a new size-1 dim.
//! Then, per mesh dim, a shard either follows its tensor dim to the output or cannot:
//! - flattening: a shard on the first flattened dim stays `Shard`; a shard on a later one
//!   becomes `_StridedShard(out, sf = product of the local sizes of the dims before it)`;
//!   an uneven shard on a dim that is not last in the group raises "Cannot flatten unevenly
//!   sharded tensor" (strict) or is replicated;
//! - splitting: a shard moves to the first piece if that piece divides evenly; a
//!   `_StridedShard` whose split factor equals the product of the pieces before one of them
//!   becomes a plain `Shard` of that piece (the unflatten that undoes a flatten);
//! - a sharded dim that vanishes (a size-1 dim merged away, or a split that does not divide):
//!   torch 2.12 replicates it (an all_gather), torch 2.13 raises "This operation would remove
//!   or reshape sharded dimension" for strict views.
//!
//! This follows PyTorch's two-phase propagator step for step (checked against real runs in
//! docs/pytorch-facts.md), because its corner cases are the bugs worth finding: e.g. nested
//! `(S(0), S(0))` flattening computes a local view shape that does not fit the local tensor.

use super::{Arg, Proposal, RuleSet, Strategy};
use crate::error::{DTensorError, Result};
use crate::meta::Meta;
use crate::op::Op;
use placement::{Mesh, Placement};

/// Where one output dim comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Dim {
    /// A new size-1 dim.
    Singleton,
    Input(usize),
    /// Input dims merged, outermost first.
    Flatten(Vec<usize>),
    /// Piece `id` of `input` (an input dim or a flatten) split into `group`.
    Split {
        input: Box<Dim>,
        group: Vec<usize>,
        id: usize,
    },
}

impl Dim {
    fn flatten(dims: Vec<usize>) -> Dim {
        match dims.len() {
            0 => Dim::Singleton,
            1 => Dim::Input(dims[0]),
            _ => Dim::Flatten(dims),
        }
    }

    fn split(input: Dim, group: &[usize], id: usize) -> Dim {
        if group.len() == 1 {
            return input;
        }
        if group[id] == 1 {
            return Dim::Singleton;
        }
        // Size-1 pieces are dropped from the group.
        let kept: Vec<(usize, usize)> = group.iter().copied().enumerate().filter(|&(_, s)| s != 1).collect();
        let new_id = kept.iter().position(|&(i, _)| i == id).expect("piece is kept");
        Dim::Split { input: Box::new(input), group: kept.iter().map(|&(_, s)| s).collect(), id: new_id }
    }

    /// The input dims this spec reads.
    fn walk(&self, seen: &mut Vec<usize>) {
        match self {
            Dim::Input(i) => seen.push(*i),
            Dim::Flatten(v) => seen.extend(v),
            Dim::Split { input, .. } => input.walk(seen),
            Dim::Singleton => {}
        }
    }

    /// The first input dim of a flatten, or the dim itself.
    fn root(&self) -> Option<usize> {
        match self {
            Dim::Input(i) => Some(*i),
            Dim::Flatten(v) => v.first().copied(),
            Dim::Split { input, .. } => input.root(),
            Dim::Singleton => None,
        }
    }
}

/// Resolves one -1 in a target shape (PyTorch's `infer_size`) and checks the element count.
pub(crate) fn infer_size(numel: usize, shape: &[i64]) -> Result<Vec<usize>> {
    let bad = || DTensorError::Local {
        kind: "RuntimeError",
        message: format!("shape '{:?}' is invalid for input of size {numel}", shape)
            .replace(' ', "")
            .replace(",", ", "),
    };
    let known: i64 = shape.iter().filter(|&&d| d != -1).product();
    let holes = shape.iter().filter(|&&d| d == -1).count();
    if holes > 1 || shape.iter().any(|&d| d < -1) {
        return Err(bad());
    }
    let out: Vec<usize> = if holes == 1 {
        if known == 0 || numel as i64 % known != 0 {
            return Err(bad());
        }
        shape.iter().map(|&d| if d == -1 { (numel as i64 / known) as usize } else { d as usize }).collect()
    } else {
        shape.iter().map(|&d| d as usize).collect()
    };
    if out.iter().product::<usize>() != numel {
        return Err(bad());
    }
    Ok(out)
}

/// `view_groups`: what each output dim of `from -> to` is made of.
pub(crate) fn view_groups(from: &[usize], to: &[usize]) -> Vec<Dim> {
    let (mut fi, mut ti) = (0, 0);
    let mut out = Vec::new();
    while fi < from.len() || ti < to.len() {
        let mut fgroup = Vec::new();
        let mut tgroup = Vec::new();
        let mut f = 1;
        let mut t = 1;
        if fi < from.len() {
            f = from[fi];
            fgroup.push(fi);
            fi += 1;
        }
        if ti < to.len() {
            t = to[ti];
            tgroup.push(t);
            ti += 1;
        }
        if f == 1 && t != 1 {
            ti -= usize::from(!tgroup.is_empty());
            tgroup.clear();
        } else if f != 1 && t == 1 {
            fi -= usize::from(!fgroup.is_empty());
            fgroup.clear();
        } else {
            while f != t {
                if fi < from.len() && (ti >= to.len() || t % f == 0 || t > f) {
                    f *= from[fi];
                    fgroup.push(fi);
                    fi += 1;
                } else if ti < to.len() {
                    t *= to[ti];
                    tgroup.push(to[ti]);
                    ti += 1;
                } else {
                    break;
                }
            }
        }
        if !tgroup.is_empty() {
            let flat = Dim::flatten(fgroup);
            for i in 0..tgroup.len() {
                out.push(Dim::split(flat.clone(), &tgroup, i));
            }
        }
    }
    out
}

/// `dim_unsqueeze`: a Singleton inserted at `dim`.
pub(crate) fn unsqueeze_rule(ndim: usize, dim: i64) -> Result<Vec<Dim>> {
    let d = super::norm_dim(dim, ndim + 1)?;
    let mut v: Vec<Dim> = (0..ndim).map(Dim::Input).collect();
    v.insert(d, Dim::Singleton);
    Ok(v)
}

fn view_err(m: String) -> DTensorError {
    DTensorError::ViewUneven(m)
}

/// The propagator for one call; fields mirror PyTorch's `_ViewShardingPropagator`.
struct Prop<'a> {
    src: &'a [Placement],
    shape: &'a [usize],
    rule: &'a [Dim],
    mesh: &'a [usize],
    strict: bool,
    /// torch >= 2.13: raise instead of silently replicating; demote non-first flatten shards
    /// before a split.
    v213: bool,
    allowed: Vec<Vec<bool>>,
    matched_strided: Vec<usize>,
    fallback: Vec<(usize, usize)>,
}

impl Prop<'_> {
    fn plain_shard(&self, d: usize) -> Option<usize> {
        self.src.iter().position(|p| *p == Placement::Shard(d as i64))
    }

    fn expected_sf(&self, group: &[usize], id: usize, dim: usize, md: usize) -> Option<usize> {
        let mut sf: usize = group[..id].iter().product();
        for m in 0..md {
            if self.src[m].shards(dim as i64) {
                if !sf.is_multiple_of(self.mesh[m]) {
                    return None;
                }
                sf /= self.mesh[m];
            }
        }
        Some(sf)
    }

    fn shard_for_split(&self, dim: usize, group: &[usize], id: usize) -> Option<(usize, Placement)> {
        for (md, &p) in self.src.iter().enumerate() {
            if !p.shards(dim as i64) || self.matched_strided.contains(&md) {
                continue;
            }
            match p {
                Placement::StridedShard { sf, .. } => {
                    if self.expected_sf(group, id, dim, md) == Some(sf) {
                        return Some((md, p));
                    }
                }
                _ => return Some((md, p)),
            }
        }
        None
    }

    fn analyze_flatten(&mut self, dims: &[usize]) -> Result<Vec<usize>> {
        let mut sharded = Vec::new();
        for (i, &d) in dims.iter().enumerate() {
            let Some(md) = self.plain_shard(d) else { continue };
            let (size, n) = (self.shape[d], self.mesh[md]);
            let mut can = true;
            if self.strict {
                if i != dims.len() - 1 && size % n != 0 {
                    return Err(view_err(format!(
                        "Cannot flatten unevenly sharded tensor: dimension {d} (size {size}) is not evenly divisible by mesh dimension {md} (size {n}). Please redistribute the tensor before this operation."
                    )));
                }
                sharded.push(d);
            } else if i == 0 {
                sharded.push(d);
                can = size % n == 0;
            } else {
                can = false;
            }
            self.allowed[d] = vec![can; self.mesh.len()];
        }
        if sharded.is_empty() {
            sharded.push(dims[0]);
        }
        Ok(sharded)
    }

    fn analyze_split(&mut self, input: &Dim, group: &[usize], id: usize) -> Result<Vec<usize>> {
        let in_dims = self.analyze_dim(input)?;
        let Some(&in_dim) = in_dims.first() else { return Ok(vec![]) };
        if let (true, Dim::Flatten(flat)) = (self.v213, input) {
            for &fd in &flat[1..] {
                for md in 0..self.src.len() {
                    if self.src[md] == Placement::Shard(fd as i64) {
                        self.allowed[fd][md] = false;
                        self.fallback.push((fd, md));
                    }
                }
            }
        }
        let out_size = group[id];
        let found = self.shard_for_split(in_dim, group, id);
        if id == 0 {
            self.allowed[in_dim] = self.mesh.iter().map(|&n| out_size.is_multiple_of(n)).collect();
            if let Some(md) = self.plain_shard(in_dim) {
                if self.strict && !self.allowed[in_dim][md] {
                    return Err(view_err(format!(
                        "Cannot unflatten unevenly sharded tensor: output dimension {id} (size {out_size}) is not evenly divisible by mesh dimension {md} (size {}). Please redistribute the tensor before this operation.",
                        self.mesh[md]
                    )));
                }
            }
        }
        if let Some((md, Placement::StridedShard { .. })) = found {
            let last = id == group.len() - 1;
            if self.strict && !last && !out_size.is_multiple_of(self.mesh[md]) {
                return Err(view_err(format!(
                    "Cannot unflatten unevenly sharded tensor: output dimension {id} (size {out_size}) is not evenly divisible by mesh dimension {md} (size {}). Please redistribute the tensor before this operation.",
                    self.mesh[md]
                )));
            }
            self.matched_strided.push(md);
            self.allowed[in_dim][md] = out_size.is_multiple_of(self.mesh[md]) || last;
        }
        Ok(if id == 0 { vec![in_dim] } else { vec![] })
    }

    fn analyze_dim(&mut self, d: &Dim) -> Result<Vec<usize>> {
        match d {
            Dim::Input(i) => Ok(vec![*i]),
            Dim::Flatten(v) => self.analyze_flatten(v),
            Dim::Split { input, group, id } => self.analyze_split(input, group, *id),
            Dim::Singleton => Ok(vec![]),
        }
    }

    /// Phase 1: input placements the view can take, and which output dims each input dim feeds.
    fn analyze(&mut self) -> Result<(Vec<Placement>, Vec<Vec<usize>>)> {
        let mut seen = Vec::new();
        for d in self.rule {
            d.walk(&mut seen);
        }
        self.allowed = (0..self.shape.len()).map(|d| vec![seen.contains(&d); self.mesh.len()]).collect();
        let mut to_out: Vec<Vec<usize>> = vec![Vec::new(); self.shape.len()];
        let rule = self.rule;
        for (od, cmd) in rule.iter().enumerate() {
            let in_dims = self.analyze_dim(cmd)?;
            match cmd {
                Dim::Flatten(_) => {
                    for d in in_dims {
                        to_out[d] = vec![od];
                    }
                }
                _ if !in_dims.is_empty() => to_out[in_dims[0]].push(od),
                Dim::Split { input, .. } => {
                    if let Some(root) = input.root() {
                        if !to_out[root].is_empty() {
                            to_out[root].push(od);
                        }
                    }
                }
                _ => {}
            }
        }
        let mut tgt = Vec::with_capacity(self.src.len());
        for (md, &p) in self.src.iter().enumerate() {
            match p.shard_dim() {
                Some(d) if !self.allowed[d as usize][md] => {
                    if self.strict && self.v213 && !self.fallback.contains(&(d as usize, md)) {
                        return Err(DTensorError::ViewOfShardedDim { dim: d as usize });
                    }
                    tgt.push(Placement::Replicate);
                }
                _ => tgt.push(p),
            }
        }
        Ok((tgt, to_out))
    }

    fn last_shard_in_flatten(tgt: &[Placement], md: usize, start: usize, end: usize) -> bool {
        let d = tgt[md].shard_dim().expect("a shard") as usize;
        !tgt[md + 1..]
            .iter()
            .any(|p| p.shard_dim().is_some_and(|o| (start..end).contains(&(o as usize)) && o as usize >= d))
    }

    fn keep_strided_dim(&self, cands: &[usize], dim: usize, sf: usize, md: usize) -> Option<usize> {
        let total = self.mesh[md] * sf;
        if !self.shape[dim].is_multiple_of(total) {
            return None;
        }
        let shard = self.shape[dim] / total;
        for &c in cands {
            if let Dim::Split { input, group, id } = &self.rule[c] {
                let inner: usize = group[id + 1..].iter().product();
                let mut trailing = 1;
                if let Dim::Flatten(v) = input.as_ref() {
                    let mut found = false;
                    for &fd in v {
                        if fd == dim {
                            found = true;
                        } else if found {
                            trailing *= self.shape[fd];
                        }
                    }
                }
                let flat = shard * trailing;
                if flat >= inner && flat.is_multiple_of(inner) {
                    return Some(c);
                }
            }
        }
        None
    }

    /// Phase 2: output placements.
    fn rewrite(&self, tgt: &[Placement], to_out: &[Vec<usize>]) -> Result<Vec<Placement>> {
        let mut claimed: Vec<(usize, usize)> = Vec::new();
        let mut local: Vec<usize> = self.shape.to_vec();
        let mut out = Vec::with_capacity(tgt.len());
        for (md, &p) in tgt.iter().enumerate() {
            let Some(d) = p.shard_dim().map(|d| d as usize) else {
                out.push(p);
                continue;
            };
            let cands: Vec<usize> = to_out[d].iter().copied().filter(|&o| !claimed.contains(&(d, o))).collect();
            match p {
                Placement::Shard(_) => {
                    let od = if cands.len() == 1 {
                        cands[0]
                    } else {
                        *cands
                            .iter()
                            .find(|&&o| matches!(self.rule[o], Dim::Split { id: 0, .. }))
                            .ok_or_else(|| DTensorError::Unsupported(format!("no output dim for Shard({d}) in view")))?
                    };
                    let cmd = &self.rule[od];
                    if let Dim::Split { input, group, .. } = cmd {
                        if let Dim::Flatten(v) = input.as_ref() {
                            if v[0] != d {
                                return Err(view_err(format!(
                                    "Shard(dim={d}) through Split(Flatten(...), {}) is not supported yet for non-first flatten dims.",
                                    py_tuple(group)
                                )));
                            }
                        }
                    }
                    let Dim::Flatten(v) = cmd else {
                        local[d] /= self.mesh[md];
                        out.push(Placement::Shard(od as i64));
                        continue;
                    };
                    let start = v[0];
                    let placement = if d == start {
                        Placement::Shard(od as i64)
                    } else {
                        Placement::StridedShard { dim: od as i64, sf: local[start..d].iter().product() }
                    };
                    let end = *v.last().unwrap() + 1;
                    if !local[d].is_multiple_of(self.mesh[md]) && !Self::last_shard_in_flatten(tgt, md, start, end) {
                        return Err(view_err(format!(
                            "Cannot shard unevenly distributed tensor: dimension {d} (size {}) is not evenly divisible by mesh dimension {md} (size {}). Please redistribute the tensor before this operation.",
                            local[d], self.mesh[md]
                        )));
                    }
                    local[d] /= self.mesh[md];
                    out.push(placement);
                }
                Placement::StridedShard { sf, .. } => {
                    let mut done = false;
                    for &c in &cands {
                        if let Dim::Split { group, id, .. } = &self.rule[c] {
                            if self.expected_sf(group, *id, d, md) == Some(sf) {
                                claimed.push((d, c));
                                local[d] /= self.mesh[md];
                                out.push(Placement::Shard(c as i64));
                                done = true;
                                break;
                            }
                        }
                    }
                    if done {
                        continue;
                    }
                    let od = match self.keep_strided_dim(&cands, d, sf, md) {
                        Some(o) => o,
                        None => {
                            if self.strict && cands.iter().any(|&c| matches!(self.rule[c], Dim::Split { .. })) {
                                return Err(view_err(format!(
                                    "Cannot unflatten tensor with _StridedShard placement: split_factor={sf} does not match any output dimension. This typically means the _StridedShard placement was constructed with a split_factor that is incompatible with the unflatten shape. Please redistribute the tensor before this operation."
                                )));
                            }
                            *cands.first().ok_or_else(|| {
                                DTensorError::Unsupported(format!("no output dim for _StridedShard({d}) in view"))
                            })?
                        }
                    };
                    local[d] /= self.mesh[md];
                    out.push(Placement::StridedShard { dim: od as i64, sf });
                }
                _ => unreachable!("only shards reach here"),
            }
        }
        Ok(out)
    }
}

fn py_tuple(v: &[usize]) -> String {
    let s: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    if s.len() == 1 {
        format!("({},)", s[0])
    } else {
        format!("({})", s.join(", "))
    }
}

/// Input and output placements of a view with `rule` (PyTorch's `propagate_shape_and_sharding`).
pub(crate) fn propagate(
    src: &[Placement],
    shape: &[usize],
    rule: &[Dim],
    mesh: &[usize],
    strict: bool,
    rules: RuleSet,
) -> Result<(Vec<Placement>, Vec<Placement>)> {
    let mut p = Prop {
        src,
        shape,
        rule,
        mesh,
        strict,
        v213: rules.view() == super::rulesets::ViewRule::Raise,
        allowed: Vec::new(),
        matched_strided: Vec::new(),
        fallback: Vec::new(),
    };
    let (tgt, to_out) = p.analyze()?;
    let out = p.rewrite(&tgt, &to_out)?;
    Ok((tgt, out))
}

/// `expand(size)` (`_view_ops.py` `expand` + `propagate_shape_and_sharding`, the same in every
/// release): new leading dims shift the shards, dims that keep their size keep theirs, and a
/// size-1 dim that grows is a `Broadcast` PyTorch maps to no output dim, so a shard on it fails
/// propagation with the bare `KeyError` of that dim (checked on 2.12.1, 2.13.0, 2.14.0: "2").
/// Partials pass.
fn expand_rule(a: &Arg, shape: &[usize]) -> Result<Proposal> {
    let from = &a.meta.shape;
    let list = |v: &[usize]| format!("[{}]", v.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "));
    if shape.len() < from.len() {
        use crate::meta::DType::*;
        let ty = match a.meta.dtype {
            F32 => "torch.FloatTensor",
            F64 => "torch.DoubleTensor",
            BF16 => "CPUBFloat16Type",
            F16 => "torch.HalfTensor",
            Bool => "CPUBoolType",
            I64 => "torch.LongTensor",
            I32 => "torch.IntTensor",
        };
        return Err(DTensorError::Shape(format!(
            "expand({ty}{{{}}}, size={}): the number of sizes provided ({}) must be greater or equal to the number of dimensions in the tensor ({})",
            list(from),
            list(shape),
            shape.len(),
            from.len()
        )));
    }
    let pad = shape.len() - from.len();
    for (i, &f) in from.iter().enumerate() {
        if f != 1 && shape[i + pad] != f {
            return Err(DTensorError::Shape(format!(
                "The expanded size of the tensor ({}) must match the existing size ({f}) at non-singleton dimension {}.  Target sizes: {}.  Tensor sizes: {}",
                shape[i + pad],
                i + pad,
                list(shape),
                list(from)
            )));
        }
    }
    let mut out = Vec::with_capacity(a.placements.len());
    for &p in &a.placements {
        out.push(match p.shard_dim() {
            Some(d) if from[d as usize] == 1 && shape[d as usize + pad] != 1 => {
                return Err(DTensorError::PropagationKeyError(d.to_string()))
            }
            Some(d) => p.with_dim(d + pad as i64),
            None => p,
        });
    }
    let meta = Meta::new(shape.to_vec(), a.meta.dtype);
    Ok(Proposal::single(vec![meta], Strategy { outs: vec![out], ins: vec![a.placements.clone()] }))
}

pub fn propose(op: &Op, args: &[Arg], mesh: &Mesh, rules: RuleSet) -> Result<Proposal> {
    let a = &args[0];
    let (rule, out_shape, strict) = match op {
        Op::Expand { shape } => return expand_rule(a, shape),
        Op::View { shape, .. } => {
            let to = infer_size(a.meta.numel(), shape)?;
            (view_groups(&a.meta.shape, &to), to, true)
        }
        Op::Unsqueeze { dim } => {
            let rule = unsqueeze_rule(a.meta.ndim(), *dim)?;
            let mut s = a.meta.shape.clone();
            s.insert(super::norm_dim(*dim, a.meta.ndim() + 1)?, 1);
            (rule, s, false)
        }
        _ => unreachable!("view::propose called for {op:?}"),
    };
    let (tgt, out) = propagate(&a.placements, &a.meta.shape, &rule, mesh.shape(), strict, rules)?;
    Ok(Proposal::single(vec![Meta::new(out_shape, a.meta.dtype)], Strategy { outs: vec![out], ins: vec![tgt] }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use placement::Placement::*;

    #[test]
    fn view_groups_decomposes_flatten_and_split() {
        assert_eq!(view_groups(&[2, 4, 16], &[8, 16]), vec![Dim::Flatten(vec![0, 1]), Dim::Input(2)]);
        let g = view_groups(&[8, 16], &[2, 4, 16]);
        assert_eq!(g[0], Dim::Split { input: Box::new(Dim::Input(0)), group: vec![2, 4], id: 0 });
        assert_eq!(g[2], Dim::Input(1));
        // A size-1 dim merged away leaves no trace in the rule.
        assert_eq!(view_groups(&[2, 1, 16], &[2, 16]), vec![Dim::Input(0), Dim::Input(2)]);
    }

    fn gate(ps: &[Placement], mesh: &[usize], shape: &[usize], rules: RuleSet) -> Result<Vec<Placement>> {
        let to = [shape[0] * shape[1], shape[2]];
        propagate(ps, shape, &view_groups(shape, &to), mesh, true, rules).map(|r| r.1)
    }

    #[test]
    fn flatten_of_a_token_shard_is_strided() {
        assert_eq!(
            gate(&[Shard(1)], &[2], &[2, 4, 16], RuleSet::Torch213).unwrap(),
            vec![StridedShard { dim: 0, sf: 2 }]
        );
        assert_eq!(gate(&[Shard(0)], &[2], &[2, 4, 16], RuleSet::Torch212).unwrap(), vec![Shard(0)]);
        assert_eq!(gate(&[Shard(2)], &[2], &[2, 4, 16], RuleSet::Torch213).unwrap(), vec![Shard(1)]);
    }

    #[test]
    fn short_sequence_replicates_on_2_12_and_raises_on_2_13() {
        let (tgt, out) =
            propagate(&[Shard(1)], &[2, 1, 16], &view_groups(&[2, 1, 16], &[2, 16]), &[2], true, RuleSet::Torch212)
                .unwrap();
        assert_eq!((tgt, out), (vec![Replicate], vec![Replicate]));
        let e = gate(&[Shard(1)], &[2], &[2, 1, 16], RuleSet::Torch213).unwrap_err();
        assert_eq!(e.to_string(), "This operation would remove or reshape sharded dimension 1, which requires redistribution. Please redistribute the input first.");
    }

    #[test]
    fn uneven_batch_cannot_flatten() {
        let e = gate(&[Shard(0)], &[2], &[3, 4, 16], RuleSet::Torch212).unwrap_err();
        assert!(e.to_string().starts_with("Cannot flatten unevenly sharded tensor: dimension 0 (size 3)"));
    }

    #[test]
    fn unflatten_undoes_the_strided_flatten() {
        let rule = view_groups(&[10, 8], &[2, 5, 8]);
        let (_, out) =
            propagate(&[StridedShard { dim: 0, sf: 2 }], &[10, 8], &rule, &[2], true, RuleSet::Torch213).unwrap();
        assert_eq!(out, vec![Shard(1)]);
    }

    #[test]
    fn nested_token_shards_fail_to_unflatten() {
        // (S(1), S(1)) on (1, 2): the flatten gives (_S(0,2), _S(0,2)) and the unflatten raises.
        let out = gate(&[Shard(1), Shard(1)], &[1, 2], &[2, 4, 16], RuleSet::Torch213).unwrap();
        let rule = view_groups(&[8, 8], &[2, 4, 8]);
        let e = propagate(&out, &[8, 8], &rule, &[1, 2], true, RuleSet::Torch213).unwrap_err();
        assert!(e.to_string().starts_with("Cannot unflatten tensor with _StridedShard placement: split_factor=2"));
    }

    /// expand (checked on real 2.12.1, 2.13.0, 2.14.0): a shard on a size-1 dim that grows fails
    /// propagation with the KeyError of that dim ("2"); one that stays size 1 is kept; new leading
    /// dims shift the shards; Partials pass.
    #[test]
    fn expand_follows_pytorchs_dim_map() {
        let a =
            |ps: &[Placement]| Arg { meta: Meta::new(vec![2, 4, 1], crate::meta::DType::F32), placements: ps.to_vec() };
        let m = Mesh::tp(2);
        let run = |shape: &[usize], ps: &[Placement]| {
            propose(&Op::Expand { shape: shape.to_vec() }, &[a(ps)], &m, RuleSet::Torch213)
                .map(|p| p.strategies[0].outs[0].clone())
        };
        let e = run(&[2, 4, 3], &[Shard(2)]).unwrap_err();
        assert_eq!((e.kind(), e.to_string()), ("RuntimeError", "2".to_string()));
        assert_eq!(run(&[2, 4, 1], &[Shard(2)]).unwrap(), vec![Shard(2)]);
        assert_eq!(run(&[5, 2, 4, 1], &[Shard(0)]).unwrap(), vec![Shard(1)]);
        let p = Partial(placement::ReduceOp::Sum);
        assert_eq!(run(&[2, 4, 3], &[p]).unwrap(), vec![p]);
        let e = run(&[2, 3, 3], &[Replicate]).unwrap_err();
        assert_eq!(e.to_string(), "The expanded size of the tensor (3) must match the existing size (4) at non-singleton dimension 1.  Target sizes: [2, 3, 3].  Tensor sizes: [2, 4, 1]");
    }
}
