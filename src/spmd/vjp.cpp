// libtorch's autograd engine started at given outputs with given gradients, which tch does not
// expose (it starts the engine from ones at scalar roots, so callers built sum(output *
// gradient) first: four more ops and three more backward nodes per output). Two entries:
// shardfuzz_vjp returns the gradients of given inputs (torch.autograd.grad(outputs, inputs,
// grads, allow_unused=True)); shardfuzz_backward accumulates into the leaves' .grad
// (torch.autograd.backward(outputs, grads)). Both return 1 where the engine refuses.
//
// Each gradient reaches its output with the values and the layout the scalar root gave it: cast
// to the output's dtype keeping its strides, made contiguous where they overlap or leave gaps
// (as an elementwise product with it would be).
#include <torch/csrc/autograd/engine.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/variable.h>

#include <exception>
#include <vector>

namespace {

// The engine's roots and their gradients, as the header says.
void seeds(at::Tensor** outputs, at::Tensor** grads, int n, std::vector<torch::autograd::Edge>& roots,
           std::vector<at::Tensor>& root_grads) {
  for (int i = 0; i < n; ++i) {
    roots.push_back(torch::autograd::impl::gradient_edge(*outputs[i]));
    at::Tensor g = *grads[i];
    if (!g.is_non_overlapping_and_dense()) g = g.contiguous();
    root_grads.push_back(g.to(outputs[i]->scalar_type()));
  }
}

}  // namespace

extern "C" int shardfuzz_vjp(at::Tensor** outputs, at::Tensor** grads, int n, at::Tensor** inputs, int ni,
                             at::Tensor** results) {
  try {
    std::vector<torch::autograd::Edge> roots;
    std::vector<at::Tensor> root_grads;
    seeds(outputs, grads, n, roots, root_grads);
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

// torch.autograd.backward(outputs, grads): the leaves accumulate their gradients in .grad. The
// engine checks every root's gradient before it runs a node, so a refusal accumulates nothing.
extern "C" int shardfuzz_backward(at::Tensor** outputs, at::Tensor** grads, int n) {
  try {
    std::vector<torch::autograd::Edge> roots;
    std::vector<at::Tensor> root_grads;
    seeds(outputs, grads, n, roots, root_grads);
    torch::autograd::Engine::get_default_engine().execute(roots, root_grads, false, false, true, {});
    return 0;
  } catch (const std::exception&) {
    return 1;
  }
}
