// libtorch's autograd engine started at given outputs with given gradients, which tch does not
// expose (it starts the engine from ones at scalar roots, so callers built sum(output *
// gradient) first: four more ops and three more backward nodes per output). Two entries:
// shardfuzz_vjp returns the gradients of given inputs (torch.autograd.grad(outputs, inputs,
// grads, allow_unused=True)); shardfuzz_backward accumulates into the leaves' .grad
// (torch.autograd.backward(outputs, grads)). Both return 1 where the engine refuses.
//
// Both run the sweep of sweep.cpp where it covers the graph, else the engine itself.
//
// Each gradient reaches its output with the values and the layout the scalar root gave it: cast
// to the output's dtype keeping its strides, made contiguous where they overlap or leave gaps
// (as an elementwise product with it would be).
#include <torch/csrc/autograd/engine.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/variable.h>

#include <exception>
#include <vector>

#include "sweep.h"

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

// Whether the sweep (sweep.cpp) stands in for the engine where it can, on this thread; off only
// to compare the two.
thread_local bool use_sweep = true;
// How many backward calls on this thread the sweep ran (for the comparisons' own check).
thread_local long swept = 0;

bool try_sweep(const std::vector<torch::autograd::Edge>& roots, const std::vector<at::Tensor>& grads, bool keep_graph,
               const std::vector<torch::autograd::Edge>& wanted, torch::autograd::variable_list* results) {
  if (!use_sweep || !shardfuzz::sweep(roots, grads, keep_graph, wanted, results)) return false;
  swept += 1;
  return true;
}

}  // namespace

extern "C" void shardfuzz_use_sweep(int on) { use_sweep = on != 0; }

extern "C" long shardfuzz_swept() { return swept; }

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
    torch::autograd::variable_list got;
    if (!try_sweep(roots, root_grads, true, wanted, &got)) {
      got = torch::autograd::Engine::get_default_engine().execute(roots, root_grads, true, false, false, wanted);
    }
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
    if (!try_sweep(roots, root_grads, false, {}, nullptr)) {
      torch::autograd::Engine::get_default_engine().execute(roots, root_grads, false, false, true, {});
    }
    return 0;
  } catch (const std::exception&) {
    return 1;
  }
}
