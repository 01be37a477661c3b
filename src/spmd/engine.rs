//! libtorch's autograd engine started at given outputs with given gradients (the C++ shim in
//! vjp.cpp), which tch does not expose: tch starts it from ones at scalar roots, so a caller
//! had to build `sum(output * gradient)` first, four more ops and three more backward nodes per
//! output. The gradients reach their outputs with the values and the layout that scalar root
//! gave them (cast to the output's dtype keeping their strides; contiguous where those overlap
//! or leave gaps).

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
}
