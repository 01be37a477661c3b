// One call of libtorch's autograd engine from given output gradients: the engine starts at the
// outputs' grad_fns with those gradients and returns the gradients of the given inputs, as
// torch.autograd.grad(outputs, inputs, grad_outputs, allow_unused=True) does. tch only starts
// the engine from ones (a scalar root), which made the runtime build sum(output * gradient) on
// every rank of every op: four more ops and three more backward nodes each.
//
// Each gradient reaches its output with the values and the layout the old scalar root gave it:
// cast to the output's dtype keeping its strides, made contiguous where they overlap or leave
// gaps (as an elementwise product with it would be).
#include <torch/csrc/autograd/engine.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/variable.h>

#include <exception>
#include <vector>

extern "C" int shardfuzz_vjp(at::Tensor** outputs, at::Tensor** grads, int n, at::Tensor** inputs, int ni,
                             at::Tensor** results) {
  try {
    std::vector<torch::autograd::Edge> roots;
    std::vector<at::Tensor> root_grads;
    for (int i = 0; i < n; ++i) {
      roots.push_back(torch::autograd::impl::gradient_edge(*outputs[i]));
      at::Tensor g = *grads[i];
      if (!g.is_non_overlapping_and_dense()) g = g.contiguous();
      root_grads.push_back(g.to(outputs[i]->scalar_type()));
    }
    std::vector<torch::autograd::Edge> wanted;
    for (int i = 0; i < ni; ++i) {
      if (!inputs[i]->requires_grad()) return 1;
      wanted.push_back(torch::autograd::impl::gradient_edge(*inputs[i]));
    }
    auto got = torch::autograd::Engine::get_default_engine().execute(roots, root_grads, true, false, false, wanted);
    for (int i = 0; i < ni; ++i) results[i] = new at::Tensor(got[i]);
    return 0;
  } catch (const std::exception&) {
    return 1;
  }
}
