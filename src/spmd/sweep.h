// The backward sweep of sweep.cpp: libtorch's autograd engine's result on plain CPU graphs,
// without the engine's per-node bookkeeping.
#pragma once

#include <torch/csrc/autograd/edge.h>
#include <torch/csrc/autograd/variable.h>

#include <vector>

namespace shardfuzz {

// Runs the backward from `roots` with `grads` (Engine::execute with create_graph off). With
// `wanted` empty every reachable node runs and leaves accumulate into .grad; otherwise only
// the nodes on a path to a wanted edge run and `results` gets each wanted gradient (undefined
// where none arrives). False, with nothing run, where the graph is not one the sweep covers;
// a node's error propagates as the engine's does.
bool sweep(const std::vector<torch::autograd::Edge>& roots, torch::autograd::variable_list grads, bool keep_graph,
           const std::vector<torch::autograd::Edge>& wanted, torch::autograd::variable_list* results);

}  // namespace shardfuzz
