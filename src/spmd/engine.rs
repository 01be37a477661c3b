//! libtorch's autograd engine started at given outputs with given gradients (the C++ shim in
//! vjp.cpp), which tch does not expose: tch starts it from ones at scalar roots, so a caller
//! had to build `sum(output * gradient)` first, four more ops and three more backward nodes per
//! output. The gradients reach their outputs with the values and the layout that scalar root
//! gave them (cast to the output's dtype keeping their strides; contiguous where those overlap
//! or leave gaps). Both run a sweep of the graph that gives the engine's results bit for bit
//! without its cost per node ([`use_sweep`]), and the engine where the sweep does not apply.

use tch::Tensor;

type Raw = *mut torch_sys::C_tensor;

extern "C" {
    fn shardfuzz_vjp(
        outputs: *const Raw,
        grads: *const Raw,
        n: i32,
        inputs: *const Raw,
        ni: i32,
        results: *mut Raw,
    ) -> i32;
    fn shardfuzz_backward(outputs: *const Raw, grads: *const Raw, n: i32) -> i32;
    fn shardfuzz_use_sweep(on: i32);
    fn shardfuzz_swept() -> std::os::raw::c_long;
}

/// Whether this thread's backward calls run the sweep (sweep.cpp: the engine's result without
/// its per-node bookkeeping, on plain CPU graphs) or libtorch's engine itself. On unless a
/// caller turns it off, which only the comparisons of the two do.
pub fn use_sweep(on: bool) {
    // SAFETY: sets a thread-local flag.
    unsafe { shardfuzz_use_sweep(on as i32) }
}

/// How many backward calls of this thread the sweep has run (the comparisons' check that it ran).
pub fn sweeps_run() -> i64 {
    // SAFETY: reads a thread-local count.
    unsafe { shardfuzz_swept() as i64 }
}

fn raw(v: &[&Tensor]) -> Vec<Raw> {
    v.iter().map(|t| t.as_ptr() as Raw).collect()
}

/// The gradients of `inputs` from one engine call started at `outputs` with `grads`
/// (`torch.autograd.grad(outputs, inputs, grads, allow_unused=True)`; undefined where an input
/// takes none); `None` where the engine refused (a gradient whose shape does not fit its
/// output), for the caller's fallback.
pub fn vjp(outputs: &[&Tensor], grads: &[&Tensor], inputs: &[&Tensor]) -> Option<Vec<Tensor>> {
    let (o, g, i) = (raw(outputs), raw(grads), raw(inputs));
    let mut results = vec![std::ptr::null_mut(); inputs.len()];
    // SAFETY: every pointer is a live tensor borrowed for the call; the shim writes one new
    // tensor per input into `results` (owned here from then on) and only when it returns 0.
    let rc = unsafe {
        shardfuzz_vjp(o.as_ptr(), g.as_ptr(), o.len() as i32, i.as_ptr(), i.len() as i32, results.as_mut_ptr())
    };
    (rc == 0).then(|| results.into_iter().map(|p| unsafe { Tensor::from_ptr(p) }).collect())
}

/// `torch.autograd.backward(outputs, grads)`: every leaf the outputs depend on accumulates its
/// gradient in `.grad`. False where the engine refused (nothing was accumulated then).
pub fn backward_from(outputs: &[&Tensor], grads: &[&Tensor]) -> bool {
    let (o, g) = (raw(outputs), raw(grads));
    // SAFETY: every pointer is a live tensor borrowed for the call.
    unsafe { shardfuzz_backward(o.as_ptr(), g.as_ptr(), o.len() as i32) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn leaves() -> (Tensor, Tensor) {
        let a = Tensor::randn([4, 6], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let w = Tensor::randn([6, 3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        (a, w)
    }

    /// Started at two outputs with their gradients (one a narrowed, gapped view), the leaves'
    /// gradients are those of the scalar root `Σ sum(y · g)`, bit for bit; a gradient the engine
    /// refuses leaves every `.grad` untouched.
    #[test]
    fn backward_from_outputs_is_the_scalar_roots_backward() {
        tch::manual_seed(5);
        let (a, w) = leaves();
        let (b, v) = (a.detach().set_requires_grad(true), w.detach().set_requires_grad(true));
        let big = Tensor::randn([4, 8], (Kind::Float, Device::Cpu));
        let (g1, g2) = (big.narrow(1, 2, 3), Tensor::randn([4, 6], (Kind::Float, Device::Cpu)));
        let (y1, y2) = (a.matmul(&w).silu(), a.exp());
        assert!(backward_from(&[&y1, &y2], &[&g1, &g2]));
        let (z1, z2) = (b.matmul(&v).silu(), b.exp());
        ((&z1 * &g1).sum(Kind::Float) + (&z2 * &g2).sum(Kind::Float)).backward();
        assert!(a.grad().equal(&b.grad()) && w.grad().equal(&v.grad()));
        let (c, u) = leaves();
        assert!(!backward_from(&[&c.matmul(&u)], &[&Tensor::ones([3], (Kind::Float, Device::Cpu))]));
        assert!(!c.grad().defined() && !u.grad().defined());
    }

    /// A graph with what the sweep must reproduce of the engine: bf16 casts and a mixed-dtype
    /// product (validate_outputs casts), a broadcast bias (sum_to), a value feeding five ops
    /// (gradients meeting in one buffer, where their order shows in the rounding), index_put,
    /// scatter_add and an indexed read, and a second output downstream of the first.
    fn tangled(a: &Tensor, w: &Tensor, bias: &Tensor) -> Vec<Tensor> {
        let h = (a.to_kind(Kind::BFloat16).matmul(&w.to_kind(Kind::BFloat16)) * w.mean(Kind::Float)) + bias;
        let n = a.size()[0];
        let idx = Tensor::arange(n, (Kind::Int64, Device::Cpu)).flip([0]);
        let placed = h.zeros_like().index_put(&[Some(idx.shallow_clone())], &h.silu(), false);
        let wide = idx.reshape([n, 1]).expand([n, h.size()[1]], false);
        let spread = h.zeros_like().scatter_add(0, &wide, &(&h * &h));
        let y1 = placed.index(&[Some(idx)]) + spread + &h * 1e3 + (&h * 0.37).exp();
        let y2 = y1.softmax(1, Kind::Float) * &h;
        vec![y1, y2]
    }

    fn fresh(ts: &[&Tensor]) -> Vec<Tensor> {
        ts.iter().map(|t| t.detach().copy().set_requires_grad(true)).collect()
    }

    /// The sweep gives the engine's gradients bit for bit, for autograd.grad (wanted inputs, one
    /// of them unreachable) and for backward (accumulated into .grad).
    #[test]
    fn the_sweep_is_the_engine_bit_for_bit() {
        tch::manual_seed(11);
        let opts = (Kind::Float, Device::Cpu);
        let base = [Tensor::randn([32, 24], opts), Tensor::randn([24, 16], opts), Tensor::randn([16], opts)];
        let gs = [Tensor::randn([32, 16], opts), Tensor::randn([32, 16], opts)];
        let grads: Vec<&Tensor> = gs.iter().collect();
        let run = |sweep: bool| {
            let before = sweeps_run();
            use_sweep(sweep);
            let l = fresh(&base.iter().collect::<Vec<_>>());
            let unused = Tensor::ones([2], opts).set_requires_grad(true);
            let ys = tangled(&l[0], &l[1], &l[2]);
            let got = vjp(&[&ys[0], &ys[1]], &grads, &[&l[0], &unused, &l[2]]).expect("a vjp");
            let k = fresh(&base.iter().collect::<Vec<_>>());
            let zs = tangled(&k[0], &k[1], &k[2]);
            assert!(backward_from(&[&zs[0], &zs[1]], &grads));
            use_sweep(true);
            let swept = sweeps_run() - before;
            assert_eq!(swept, if sweep { 2 } else { 0 }, "calls the sweep ran");
            (got, k.iter().map(|t| t.grad()).collect::<Vec<_>>())
        };
        let ((g1, acc1), (g2, acc2)) = (run(true), run(false));
        assert!(!g1[1].defined() && !g2[1].defined(), "the unreachable input takes no gradient");
        for (x, y) in [(&g1[0], &g2[0]), (&g1[2], &g2[2])].into_iter().chain(acc1.iter().zip(&acc2)) {
            // NaN would make `equal` fail whatever the order: the data keep every value finite.
            assert!(x.defined() && x.isfinite().all().int64_value(&[]) == 1, "{x:?}");
            assert!(x.equal(y), "{x:?} != {y:?}");
        }
    }
}
