"""Autograd boundary semantics: to_local / from_local / redistribute / local_map backward,
1-D mesh (2,), per-rank locals. Prints grad placements, per-rank local grads, comms."""
import sys, os
sys.path.insert(0, os.path.dirname(__file__))
from probe import *
from torch.distributed.tensor.experimental import local_map

def locals_of(t):
    if isinstance(t, DTensor):
        t = t.to_local()
    if isinstance(t, LocalTensor):
        return {r: t._local_tensors[r].flatten().tolist() for r in sorted(t._local_tensors)}
    return t.flatten().tolist()

def per_rank(H, f):
    return LocalTensor({r: f(r) for r in range(H.world)})

def body(H):
    m = H.mesh((2,))
    full = torch.arange(4.0).reshape(4, 1) + 1
    def c_r(H, shape):
        return per_rank(H, lambda r: torch.full(shape, float(r + 1)))  # rank-dependent upstream grad 1, 2
    cases = []
    # to_local
    for fwd, gp in [([R], None), ([R], [P]), ([P], None), ([S(0)], None), ([R], [S(0)])]:
        def f(fwd=fwd, gp=gp):
            x = H.dt(full, m, fwd, requires_grad=True)
            xl = x.to_local(grad_placements=gp) if gp is not None else x.to_local()
            (xl * c_r(H, xl.shape)).sum().backward()
            note(H, f"RESULT x.grad {gdesc(x.grad)} locals {locals_of(x.grad)}")
        cases.append((f"to_local fwd={pl(fwd)} grad_placements={pl(gp) if gp else None}", f))
    # from_local
    for fwd, gp, gin in [([R], None, [P]), ([R], [P], [P]), ([R], None, [R]), ([S(0)], None, [P]), ([S(0)], None, [R]),
                         ([P], None, [P]), ([P], None, [R]), ([R], None, [S(0)])]:
        def f(fwd=fwd, gp=gp, gin=gin):
            t = per_rank(H, lambda r: torch.ones(2, 1) * (r + 1)).requires_grad_(True) if fwd == [S(0)] else per_rank(H, lambda r: torch.ones(4, 1) * (r + 1)).requires_grad_(True)
            kw = {"grad_placements": gp} if gp is not None else {}
            y = DTensor.from_local(t, m, fwd, run_check=False, **kw)
            g = H.dt(torch.arange(4.0).reshape(4, 1) * 10 + 10, m, gin)
            y.backward(g)
            note(H, f"RESULT t.grad locals {locals_of(t.grad)}  (grad in {pl(gin)} = global {[10.,20.,30.,40.]})")
        cases.append((f"from_local fwd={pl(fwd)} grad_placements={pl(gp) if gp else None} incoming grad {pl(gin)}", f))
    # Redistribute
    for src, dst, gin in [([S(0)], [R], [P]), ([S(0)], [R], [R]), ([P], [S(0)], [S(0)]), ([P], [R], [R]), ([P], [R], [P]),
                          ([S(0)], [S(1)], [S(1)]), ([R], [S(0)], [S(0)]), ([R], [S(0)], [P]), ([S(0)], [R], [S(0)])]:
        def f(src=src, dst=dst, gin=gin):
            x = H.dt(torch.arange(16.0).reshape(4, 4), m, src, requires_grad=True)
            y = x.redistribute(m, dst)
            g = H.dt(torch.ones(4, 4), m, gin)
            y.backward(g)
            note(H, f"RESULT x.grad {gdesc(x.grad)} (fwd {pl(src)}->{pl(dst)}, grad in {pl(gin)})")
        cases.append((f"redistribute fwd {pl(src)}->{pl(dst)}, incoming grad {pl(gin)}", f))
    # local_map
    for ingrad, outp in [(None, [R]), (([P],), [R]), (None, [P]), (([P],), [P])]:
        def f(ingrad=ingrad, outp=outp):
            x = H.dt(full, m, [R], requires_grad=True)
            fn = local_map(lambda a: a * 3.0, out_placements=(outp,), in_placements=([R],), in_grad_placements=ingrad, device_mesh=m)
            y = fn(x)
            g = H.dt(torch.ones(4, 1), m, [P])
            y.backward(g)
            note(H, f"RESULT y {gdesc(y)}; x.grad {gdesc(x.grad)} locals {locals_of(x.grad)}")
        cases.append((f"local_map in [R] in_grad_placements={ingrad} out {pl(outp)}, incoming grad [P] (locals 0.5,0.5 of ones)", f))
    def f():
        x = H.dt(full, m, [R], requires_grad=True)
        fn = local_map(lambda a: a * 3.0, out_placements=([R],), in_placements=([R],), in_grad_placements=(None,), device_mesh=m)
        fn(x)
    cases.append(("local_map in_grad_placements=(None,)", f))
    for label, f in cases:
        run(H, label, f)

main({2: body})
