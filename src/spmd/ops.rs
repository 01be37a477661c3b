//! Rank-local ops: every rank runs the same libtorch op on its own locals; the output type
//! follows the checker's rules for the op's linearity; autograd takes each rank's
//! vector-Jacobian product through libtorch.
//!
//! The op table follows the library's registry: add/sub/neg/clone/sum/mean/cumsum/cat/stack,
//! views (view, reshape, transpose, expand, ...), gather and index_select are LINEAR;
//! mul/matmul/mm/einsum are MULTILINEAR; div is MULTILINEAR with the divisor a nonlinear
//! argument; every other op (F.linear, sigmoid, softmax, silu, topk, argsort, scatter_add,
//! indexing with `x[idx]`, masked_fill, dtype casts, zeros_like, ...) is NONLINEAR.
//!
//! The tensor code itself may fail on a rank (a shape mismatch in `add`, `topk` past the dim's
//! size, a `view` to an impossible shape): the op then raises torch's error as Python shows it
//! ([`SpmdError::torch`]), from the first failing rank in rank order, after the checker.

use crate::error::{Result, SpmdError};
use crate::infer::{infer_output, In, Linearity};
use crate::types::{LocalType, Ty};
use crate::{STensor, Spmd};
use tch::{Kind, Tensor};

/// How the checker treats one op.
#[derive(Clone, Copy, Debug)]
pub struct OpSpec {
    /// The Python function name the checker prints (`div`, `__rdiv__`, ...).
    pub name: &'static str,
    pub linearity: Linearity,
    /// A Python number sits at one of the op's tensor positions (`x + 1.0`, `x / 2`): it
    /// takes part in the rule as a scalar operand.
    pub scalar: bool,
    /// The operand (index among the call's arguments) that enters nonlinearly (a divisor):
    /// it must not be P.
    pub nonlinear_arg: Option<usize>,
}

impl OpSpec {
    pub const fn nonlinear(name: &'static str) -> OpSpec {
        OpSpec { name, linearity: Linearity::Nonlinear, scalar: false, nonlinear_arg: None }
    }
    pub const fn linear(name: &'static str) -> OpSpec {
        OpSpec { name, linearity: Linearity::Linear, scalar: false, nonlinear_arg: None }
    }
    pub const fn multilinear(name: &'static str) -> OpSpec {
        OpSpec { name, linearity: Linearity::Multilinear, scalar: false, nonlinear_arg: None }
    }
    pub const fn with_scalar(mut self) -> OpSpec {
        self.scalar = true;
        self
    }
    pub const fn with_nonlinear_arg(mut self, i: usize) -> OpSpec {
        self.nonlinear_arg = Some(i);
        self
    }
}

/// A libtorch result as the runtime's: torch's error on the rank ([`SpmdError::torch`]).
pub fn torch<T>(r: std::result::Result<T, tch::TchError>) -> Result<T> {
    r.map_err(SpmdError::torch)
}

fn is_float(k: Kind) -> bool {
    matches!(k, Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16)
}

impl Spmd {
    /// The output type of an op with these operand types, or the checker's error.
    pub fn op_type(&self, spec: &OpSpec, ins: &[&LocalType]) -> Result<LocalType> {
        if let Some(i) = spec.nonlinear_arg {
            if let Some(t) = ins.get(i) {
                for a in self.mesh().typed_axes_in_mesh_order() {
                    if t.get(&a) == Some(&Ty::P) {
                        return Err(SpmdError::Type(format!(
                            "{}: Partial type in nonlinear argument on axis {} is not allowed. Reduce or convert the \
                             Partial operand before using it in a nonlinear position.",
                            spec.name,
                            self.mesh().shown(a)
                        )));
                    }
                }
            }
        }
        let mut v: Vec<In> = ins.iter().map(|t| In::T(t)).collect();
        if spec.scalar {
            v.push(In::Scalar);
        }
        infer_output(self.mesh(), &v, spec.linearity)
    }

    /// Runs `f` on every rank's locals of `inputs` and types the outputs (all outputs get the
    /// same type, as the checker stamps them). Autograd flows to every floating input that
    /// takes part in a backward.
    pub fn local_op(
        &mut self,
        spec: &OpSpec,
        inputs: &[&STensor],
        f: impl Fn(&[Tensor]) -> Vec<Tensor>,
    ) -> Result<Vec<STensor>> {
        self.try_local_op(spec, inputs, |a| Ok(f(a)))
    }

    /// [`Spmd::local_op`] with a fallible `f` (a libtorch `f_*` op: [`torch`]): the checker's
    /// error first, then the error of the first rank (in rank order) whose tensor code fails,
    /// as torch raises it there.
    pub fn try_local_op(
        &mut self,
        spec: &OpSpec,
        inputs: &[&STensor],
        f: impl Fn(&[Tensor]) -> Result<Vec<Tensor>>,
    ) -> Result<Vec<STensor>> {
        let tys: Vec<&LocalType> = inputs.iter().map(|x| &x.ty).collect();
        let ty = match self.op_type(spec, &tys) {
            Err(_) if !self.checking => LocalType::new(),
            t => t?,
        };
        let track: Vec<bool> = inputs.iter().map(|x| x.id.is_some() && is_float(x.kind())).collect();
        let ranks = self.mesh().ranks();
        if !track.iter().any(|t| *t) {
            let mut outs: Vec<Vec<Tensor>> = Vec::new();
            for r in 0..ranks {
                let args: Vec<Tensor> = inputs.iter().map(|x| x.locals[r].shallow_clone()).collect();
                let o = tch::no_grad(|| f(&args))?;
                if outs.is_empty() {
                    outs = (0..o.len()).map(|_| Vec::with_capacity(ranks)).collect();
                }
                for (k, t) in o.into_iter().enumerate() {
                    outs[k].push(t);
                }
            }
            return Ok(outs.into_iter().map(|locals| STensor { locals, ty: ty.clone(), id: None }).collect());
        }
        // per rank: the inputs as fresh libtorch leaves, the outputs with their graphs
        let mut leaves: Vec<Vec<Tensor>> = Vec::with_capacity(ranks);
        let mut graphs: Vec<Vec<Tensor>> = Vec::with_capacity(ranks);
        for r in 0..ranks {
            let args: Vec<Tensor> = inputs
                .iter()
                .zip(&track)
                .map(|(x, t)| if *t { x.locals[r].detach().set_requires_grad(true) } else { x.locals[r].detach() })
                .collect();
            let o = f(&args)?;
            leaves.push(args);
            graphs.push(o);
        }
        let n_out = graphs[0].len();
        let outs: Vec<Vec<Tensor>> = (0..n_out).map(|k| graphs.iter().map(|g| g[k].detach()).collect()).collect();
        let track2 = track.clone();
        let back: crate::tape::BackFn = Box::new(move |_comm, gouts| backward_all(&leaves, &graphs, &track2, gouts));
        let ids = self.tape.record(
            inputs.iter().zip(&track).map(|(x, t)| if *t { x.id } else { None }).collect(),
            n_out,
            back,
        );
        Ok(outs.into_iter().zip(ids).map(|(locals, id)| STensor { locals, ty: ty.clone(), id: Some(id) }).collect())
    }

    /// A one-output rank-local op.
    pub fn local1(&mut self, spec: &OpSpec, inputs: &[&STensor], f: impl Fn(&[Tensor]) -> Tensor) -> Result<STensor> {
        Ok(self.local_op(spec, inputs, |a| vec![f(a)])?.swap_remove(0))
    }

    /// A one-output rank-local op whose tensor code may fail (a libtorch `f_*` op).
    pub fn try_local1(
        &mut self,
        spec: &OpSpec,
        inputs: &[&STensor],
        f: impl Fn(&[Tensor]) -> std::result::Result<Tensor, tch::TchError>,
    ) -> Result<STensor> {
        Ok(self.try_local_op(spec, inputs, |a| Ok(vec![torch(f(a))?]))?.swap_remove(0))
    }

    // ---- LINEAR ----

    pub fn add(&mut self, a: &STensor, b: &STensor) -> Result<STensor> {
        self.try_local1(&OpSpec::linear("add"), &[a, b], |x| x[0].f_add(&x[1]))
    }
    pub fn sub(&mut self, a: &STensor, b: &STensor) -> Result<STensor> {
        self.try_local1(&OpSpec::linear("sub"), &[a, b], |x| x[0].f_sub(&x[1]))
    }
    /// `a + s` with a Python number: a scalar operand of a linear op (affine next to P).
    pub fn add_scalar(&mut self, a: &STensor, s: f64) -> Result<STensor> {
        self.local1(&OpSpec::linear("add").with_scalar(), &[a], move |x| &x[0] + s)
    }
    pub fn neg(&mut self, a: &STensor) -> Result<STensor> {
        self.local1(&OpSpec::linear("neg"), &[a], |x| -&x[0])
    }
    /// `sum(dims)` (all dims when `dims` is empty).
    pub fn sum(&mut self, a: &STensor, dims: &[i64], keepdim: bool) -> Result<STensor> {
        let dims = dims.to_vec();
        self.local1(&OpSpec::linear("sum"), &[a], move |x| {
            if dims.is_empty() {
                x[0].sum(x[0].kind())
            } else {
                x[0].sum_dim_intlist(dims.as_slice(), keepdim, x[0].kind())
            }
        })
    }
    pub fn cumsum(&mut self, a: &STensor, dim: i64, kind: Kind) -> Result<STensor> {
        self.local1(&OpSpec::linear("cumsum"), &[a], move |x| x[0].cumsum(dim, kind))
    }
    pub fn cat(&mut self, xs: &[&STensor], dim: i64) -> Result<STensor> {
        self.try_local1(&OpSpec::linear("cat"), xs, move |x| Tensor::f_cat(x, dim))
    }
    pub fn view(&mut self, a: &STensor, shape: &[i64]) -> Result<STensor> {
        let s = shape.to_vec();
        self.try_local1(&OpSpec::linear("view"), &[a], move |x| x[0].f_view(s.as_slice()))
    }
    pub fn reshape(&mut self, a: &STensor, shape: &[i64]) -> Result<STensor> {
        let s = shape.to_vec();
        self.try_local1(&OpSpec::linear("reshape"), &[a], move |x| x[0].f_reshape(s.as_slice()))
    }
    pub fn transpose(&mut self, a: &STensor, d0: i64, d1: i64) -> Result<STensor> {
        self.try_local1(&OpSpec::linear("transpose"), &[a], move |x| x[0].f_transpose(d0, d1))
    }
    pub fn expand(&mut self, a: &STensor, shape: &[i64]) -> Result<STensor> {
        let s = shape.to_vec();
        self.try_local1(&OpSpec::linear("expand"), &[a], move |x| x[0].f_expand(s.as_slice(), false))
    }
    /// `a.gather(dim, index)`: LINEAR over both tensor operands (the index too).
    pub fn gather(&mut self, a: &STensor, dim: i64, index: &STensor) -> Result<STensor> {
        self.try_local1(&OpSpec::linear("gather"), &[a, index], move |x| x[0].f_gather(dim, &x[1], false))
    }
    pub fn index_select(&mut self, a: &STensor, dim: i64, index: &STensor) -> Result<STensor> {
        self.try_local1(&OpSpec::linear("index_select"), &[a, index], move |x| x[0].f_index_select(dim, &x[1]))
    }

    // ---- MULTILINEAR ----

    pub fn mul(&mut self, a: &STensor, b: &STensor) -> Result<STensor> {
        self.try_local1(&OpSpec::multilinear("mul"), &[a, b], |x| x[0].f_mul(&x[1]))
    }
    /// `a * s`: the library does not count the number as an operand of mul.
    pub fn mul_scalar(&mut self, a: &STensor, s: f64) -> Result<STensor> {
        self.local1(&OpSpec::multilinear("mul"), &[a], move |x| &x[0] * s)
    }
    pub fn div(&mut self, a: &STensor, b: &STensor) -> Result<STensor> {
        self.try_local1(&OpSpec::multilinear("div").with_nonlinear_arg(1), &[a, b], |x| x[0].f_div(&x[1]))
    }
    pub fn div_scalar(&mut self, a: &STensor, s: f64) -> Result<STensor> {
        self.local1(&OpSpec::multilinear("div").with_scalar(), &[a], move |x| &x[0] / s)
    }
    /// `s / a`: the tensor is the nonlinear argument.
    pub fn rdiv_scalar(&mut self, s: f64, a: &STensor) -> Result<STensor> {
        self.local1(&OpSpec::multilinear("__rdiv__").with_scalar().with_nonlinear_arg(0), &[a], move |x| {
            x[0].reciprocal() * s
        })
    }
    pub fn matmul(&mut self, a: &STensor, b: &STensor) -> Result<STensor> {
        self.try_local1(&OpSpec::multilinear("matmul"), &[a, b], |x| x[0].f_matmul(&x[1]))
    }
    pub fn mm(&mut self, a: &STensor, b: &STensor) -> Result<STensor> {
        self.try_local1(&OpSpec::multilinear("mm"), &[a, b], |x| x[0].f_mm(&x[1]))
    }

    // ---- NONLINEAR (every op the library does not list) ----

    /// `F.linear(x, w)` (= x @ w.T): not in the library's registry, so NONLINEAR.
    pub fn linear(&mut self, x: &STensor, w: &STensor) -> Result<STensor> {
        self.try_local1(&OpSpec::nonlinear("linear"), &[x, w], |a| a[0].f_matmul(&a[1].tr()))
    }
    pub fn sigmoid(&mut self, a: &STensor) -> Result<STensor> {
        self.local1(&OpSpec::nonlinear("sigmoid"), &[a], |x| x[0].sigmoid())
    }
    pub fn softmax(&mut self, a: &STensor, dim: i64) -> Result<STensor> {
        self.local1(&OpSpec::nonlinear("softmax"), &[a], move |x| x[0].softmax(dim, x[0].kind()))
    }
    pub fn silu(&mut self, a: &STensor) -> Result<STensor> {
        self.local1(&OpSpec::nonlinear("silu"), &[a], |x| x[0].silu())
    }
    pub fn exp(&mut self, a: &STensor) -> Result<STensor> {
        self.local1(&OpSpec::nonlinear("exp"), &[a], |x| x[0].exp())
    }
    pub fn maximum(&mut self, a: &STensor, b: &STensor) -> Result<STensor> {
        self.try_local1(&OpSpec::nonlinear("maximum"), &[a, b], |x| x[0].f_maximum(&x[1]))
    }
    /// `torch.topk(a, k, dim, sorted=False)`: (values, indices), both typed alike.
    pub fn topk(&mut self, a: &STensor, k: i64, dim: i64) -> Result<(STensor, STensor)> {
        let mut v = self.try_local_op(&OpSpec::nonlinear("topk"), &[a], move |x| {
            let (vals, idx) = torch(x[0].f_topk(k, dim, true, true))?;
            Ok(vec![vals, idx])
        })?;
        let idx = v.pop().expect("two outputs");
        Ok((v.pop().expect("two outputs"), idx))
    }
    /// `torch.argsort(a, stable=True)` along `dim`.
    pub fn argsort(&mut self, a: &STensor, dim: i64) -> Result<STensor> {
        self.local1(&OpSpec::nonlinear("argsort"), &[a], move |x| x[0].argsort_stable(true, dim, false))
    }
    /// `out.scatter_add(dim, index, src)` (torchtitan's deterministic_scatter_add).
    pub fn scatter_add(&mut self, out: &STensor, dim: i64, index: &STensor, src: &STensor) -> Result<STensor> {
        self.try_local1(&OpSpec::nonlinear("scatter_add"), &[out, index, src], move |x| {
            x[0].f_scatter_add(dim, &x[1], &x[2])
        })
    }
    /// `a[idx]` on dim 0 (`__getitem__`: NONLINEAR).
    pub fn index_rows(&mut self, a: &STensor, idx: &STensor) -> Result<STensor> {
        self.try_local1(&OpSpec::nonlinear("__getitem__"), &[a, idx], |x| x[0].f_index_select(0, &x[1]))
    }
    pub fn masked_fill(&mut self, a: &STensor, mask: &STensor, value: f64) -> Result<STensor> {
        self.try_local1(&OpSpec::nonlinear("masked_fill"), &[a, mask], move |x| x[0].f_masked_fill(&x[1], value))
    }
    /// A dtype cast (`.bfloat16()`, `.float()`, `.to(kind)`): NONLINEAR.
    pub fn to_kind(&mut self, a: &STensor, kind: Kind) -> Result<STensor> {
        self.local1(&OpSpec::nonlinear("to"), &[a], move |x| x[0].to_kind(kind))
    }
    /// `a.type_as(b)`.
    pub fn type_as(&mut self, a: &STensor, b: &STensor) -> Result<STensor> {
        self.local1(&OpSpec::nonlinear("type_as"), &[a, b], |x| x[0].to_kind(x[1].kind()))
    }
    /// `torch.zeros_like(a)`: with a typed input the checker types it like a NONLINEAR op of a.
    pub fn zeros_like(&mut self, a: &STensor) -> Result<STensor> {
        self.local1(&OpSpec::nonlinear("zeros_like"), &[a], |x| x[0].zeros_like())
    }
}

/// One op's backward on every rank: the gradients of each rank's tracked inputs given the
/// gradients of its outputs, through libtorch's autograd. One backward call for all ranks,
/// started at every rank's outputs with their gradients ([`crate::engine::vjp`]; the ranks'
/// graphs share no node, and a graph's nodes run in the order of their creation, so every
/// value is the same bit for bit as one call per rank); a call's fixed cost is most of a small
/// op's backward.
fn backward_all(
    leaves: &[Vec<Tensor>],
    graphs: &[Vec<Tensor>],
    track: &[bool],
    gouts: &[Option<Vec<Tensor>>],
) -> Result<Vec<Option<Vec<Tensor>>>> {
    let want: Vec<Vec<&Tensor>> =
        leaves.iter().map(|l| l.iter().zip(track).filter(|(_, t)| **t).map(|(l, _)| l).collect()).collect();
    let seeds: Vec<Vec<(&Tensor, &Tensor)>> = (0..graphs.len()).map(|r| rank_seeds(&graphs[r], gouts, r)).collect();
    let (mut outs, mut grads, mut inputs) = (Vec::new(), Vec::new(), Vec::new());
    for (s, w) in seeds.iter().zip(&want).filter(|(s, _)| !s.is_empty()) {
        outs.extend(s.iter().map(|(o, _)| *o));
        grads.extend(s.iter().map(|(_, g)| *g));
        inputs.extend(w.iter().copied());
    }
    let got = if outs.is_empty() {
        Vec::new()
    } else {
        crate::engine::vjp(&outs, &grads, &inputs)
            .unwrap_or_else(|| scalar_root_backward(graphs, gouts, &inputs, &seeds))
    };
    let mut got = got.into_iter();
    let mut per_input: Vec<Option<Vec<Tensor>>> =
        track.iter().map(|t| if *t { Some(Vec::new()) } else { None }).collect();
    for (s, w) in seeds.iter().zip(&want) {
        let mut it = w.iter().map(|l| match (!s.is_empty()).then(|| got.next()).flatten() {
            Some(g) if g.defined() => g,
            _ => l.zeros_like(),
        });
        for pi in per_input.iter_mut().flatten() {
            pi.push(it.next().expect("one gradient per tracked input"));
        }
    }
    Ok(per_input)
}

/// Rank `r`'s float outputs that need a gradient and got one, with their gradients.
fn rank_seeds<'a>(graph: &'a [Tensor], gouts: &'a [Option<Vec<Tensor>>], r: usize) -> Vec<(&'a Tensor, &'a Tensor)> {
    let seeded = gouts.iter().enumerate().filter_map(|(k, g)| Some((&graph[k], &g.as_ref()?[r])));
    seeded.filter(|(o, _)| is_float(o.kind()) && o.requires_grad()).collect()
}

/// The engine started from ones at a scalar root, the sum over ranks of `sum(output *
/// gradient)` in float64: what [`crate::engine::vjp`] gives, where it refuses.
fn scalar_root_backward(
    graphs: &[Vec<Tensor>],
    gouts: &[Option<Vec<Tensor>>],
    inputs: &[&Tensor],
    seeds: &[Vec<(&Tensor, &Tensor)>],
) -> Vec<Tensor> {
    let terms = (0..graphs.len()).filter(|r| !seeds[*r].is_empty()).filter_map(|r| rank_term(&graphs[r], gouts, r));
    let root = terms.reduce(|a, t| a + t).expect("a seeded rank");
    Tensor::run_backward(&[&root], inputs, true, false)
}

/// Rank `r`'s `sum(output * gradient)` in float64 over the float outputs that need a gradient
/// and got one; `None` where none did.
fn rank_term(graph: &[Tensor], gouts: &[Option<Vec<Tensor>>], r: usize) -> Option<Tensor> {
    let mut s: Option<Tensor> = None;
    for (k, g) in gouts.iter().enumerate() {
        let Some(g) = g else { continue };
        let o = &graph[k];
        if !is_float(o.kind()) || !o.requires_grad() {
            continue;
        }
        let term = (o.to_kind(Kind::Double) * g[r].to_kind(Kind::Double)).sum(Kind::Double);
        s = Some(match s {
            Some(a) => a + term,
            None => term,
        });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One engine call for all ranks gives every rank's input gradients bit for bit as one call
    /// per rank on the same graphs, with an output that has no gradient, a rank whose outputs
    /// need none (detached: zeros), and an untracked input.
    #[test]
    fn one_backward_for_all_ranks_is_the_per_rank_backward_bit_for_bit() {
        tch::manual_seed(3);
        let ranks = 4;
        let track = [true, false, true];
        let (mut leaves, mut graphs, mut gs) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..ranks {
            let a = Tensor::randn([6, 8], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
            let b = Tensor::randn([8, 5], (Kind::Float, tch::Device::Cpu));
            let w = Tensor::randn([5], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
            let h = a.matmul(&b).to_kind(Kind::BFloat16).silu().to_kind(Kind::Float);
            let outs = vec![&h * &w + h.sum_dim_intlist([0i64].as_slice(), true, Kind::Float), a.sum(Kind::Float)];
            graphs.push(if r == 2 { outs.iter().map(Tensor::detach).collect() } else { outs });
            // Rank 1's gradient is transposed: it reaches its output with its own strides.
            let g = if r == 1 {
                Tensor::randn([5, 6], (Kind::Double, tch::Device::Cpu)).tr()
            } else {
                Tensor::randn([6, 5], (Kind::Float, tch::Device::Cpu))
            };
            gs.push(g);
            leaves.push(vec![a, b, w]);
        }
        let gouts = vec![Some(gs), None];
        let all = backward_all(&leaves, &graphs, &track, &gouts).unwrap();
        // ... through the shim, not its fallback.
        let seeded = [0usize, 1, 3];
        let (outs, grads, ins): (Vec<&Tensor>, Vec<&Tensor>, Vec<&Tensor>) = (
            seeded.iter().map(|r| &graphs[*r][0]).collect(),
            seeded.iter().map(|r| &gouts[0].as_ref().unwrap()[*r]).collect(),
            seeded.iter().flat_map(|r| [&leaves[*r][0], &leaves[*r][2]]).collect(),
        );
        assert!(crate::engine::vjp(&outs, &grads, &ins).is_some());
        for r in 0..ranks {
            let want: Vec<&Tensor> = [&leaves[r][0], &leaves[r][2]].into();
            let one: Vec<Tensor> = match rank_term(&graphs[r], &gouts, r).filter(Tensor::requires_grad) {
                Some(s) => Tensor::run_backward(&[&s], &want, true, false),
                None => want.iter().map(|l| l.zeros_like()).collect(),
            };
            let one: Vec<Tensor> =
                one.into_iter().zip(&want).map(|(g, l)| if g.defined() { g } else { l.zeros_like() }).collect();
            for (i, k) in [0usize, 2].into_iter().enumerate() {
                let got = &all[k].as_ref().unwrap()[r];
                assert!(got.equal(&one[i]), "rank {r}, input {k}");
            }
            assert!(all[1].is_none());
        }
        // The detached rank gets zeros; the others real gradients.
        assert!(all[0].as_ref().unwrap()[2].equal(&leaves[2][0].zeros_like()));
        assert!(all[2].as_ref().unwrap()[1].abs().sum(Kind::Float).double_value(&[]) > 0.0);
    }

    /// A gradient the engine refuses (broadcast up to its output's shape, which `sum(output *
    /// gradient)` accepts) takes the scalar root instead, with the same result.
    #[test]
    fn a_gradient_the_engine_refuses_takes_the_scalar_root() {
        let a = Tensor::randn([3, 4], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        let graphs = vec![vec![a.exp()]];
        let g = Tensor::randn([4], (Kind::Float, tch::Device::Cpu));
        assert!(crate::engine::vjp(&[&graphs[0][0]], &[&g], &[&a]).is_none());
        let gouts = vec![Some(vec![g.shallow_clone()])];
        let got = backward_all(&[vec![a.shallow_clone()]], &graphs, &[true], &gouts).unwrap();
        let want = &g.expand([3, 4], false) * a.exp();
        assert!(got[0].as_ref().unwrap()[0].allclose(&want, 1e-6, 1e-6, false));
    }
}
