// A single-threaded backward sweep for the small CPU graphs shardfuzz builds, in place of
// libtorch's Engine::execute. The engine's cost per node is mostly its own bookkeeping: it
// installs the graph task's whole thread-local state around every node, and keeps its ready
// queue as a heap whose comparisons lock weak pointers. On graphs of tiny tensors that is most
// of a backward's time. The sweep runs the same nodes with the same inputs in the same order:
// - a node is ready once every edge into it from the reachable graph has delivered;
// - of the ready nodes the one with the highest sequence number runs first (the engine's
//   order; AccumulateGrad nodes carry the largest number and run as soon as they are ready);
// - gradients meet in libtorch's own InputBuffer, in the order their producers ran, and every
//   node's outputs pass libtorch's own validate_outputs (dtype casts, sum_to);
// - with wanted inputs (autograd.grad) only the nodes on a path to one run, and each wanted
//   gradient is what its node's buffer holds when that node becomes ready.
// So every gradient is the engine's, bit for bit. Graphs the sweep does not cover (a hook on a
// node, a tensor off the CPU, anomaly mode) go to the engine itself: `sweep` returns false
// before it has run anything.
#include <torch/csrc/autograd/anomaly_mode.h>
#include <torch/csrc/autograd/engine.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/input_buffer.h>

#include <memory>
#include <queue>
#include <unordered_map>
#include <utility>
#include <vector>

#include "sweep.h"

namespace shardfuzz {

using torch::autograd::Edge;
using torch::autograd::InputBuffer;
using torch::autograd::Node;
using torch::autograd::variable_list;

namespace {

// Whether the sweep may run this node as the engine would: no hooks of any kind, every input
// on the CPU.
bool plain(Node* fn) {
  if (!fn->pre_hooks().empty() || !fn->post_hooks().empty() || !fn->tensor_pre_hooks().empty() ||
      !fn->retains_grad_hooks().empty() || fn->tensor_post_acc_grad_hooks()) {
    return false;
  }
  for (uint32_t i = 0; i < fn->num_inputs(); ++i) {
    if (fn->input_metadata(i).device().type() != c10::DeviceType::CPU) return false;
  }
  return true;
}

// The graph reachable from the roots: its nodes, and how many edges lead into each (the roots'
// own edges counted, as the engine's GraphRoot does).
struct Graph {
  std::vector<Node*> nodes;
  std::unordered_map<Node*, size_t> index;
  std::vector<size_t> deps;

  size_t id(Node* fn, std::vector<Node*>& todo) {
    auto [it, fresh] = index.emplace(fn, nodes.size());
    if (fresh) {
      nodes.push_back(fn);
      deps.push_back(0);
      todo.push_back(fn);
    }
    return it->second;
  }

  // False where a node is not plain.
  bool collect(const std::vector<Edge>& roots) {
    std::vector<Node*> todo;
    for (const auto& e : roots) {
      if (e.function) deps[id(e.function.get(), todo)] += 1;
    }
    while (!todo.empty()) {
      Node* fn = todo.back();
      todo.pop_back();
      if (!plain(fn)) return false;
      for (const auto& e : fn->next_edges()) {
        if (e.function) deps[id(e.function.get(), todo)] += 1;
      }
    }
    return true;
  }
};

// Which nodes run: all of them for a backward; for wanted inputs, those with a path to one
// (the engine's exec_info). `captured[n]` lists (input slot, result index) pairs of node n.
struct Plan {
  std::vector<bool> needed;
  std::vector<std::vector<std::pair<uint32_t, size_t>>> captured;

  bool runs(size_t n) const { return needed[n] || !captured[n].empty(); }
};

Plan plan(const Graph& g, const std::vector<Edge>& wanted) {
  Plan p;
  p.needed.assign(g.nodes.size(), wanted.empty());
  p.captured.resize(g.nodes.size());
  if (wanted.empty()) return p;
  for (size_t i = 0; i < wanted.size(); ++i) {
    auto it = g.index.find(wanted[i].function.get());
    if (it != g.index.end()) p.captured[it->second].emplace_back(wanted[i].input_nr, i);
  }
  // A node runs where one of its children runs or is captured. Nodes are numbered in their
  // discovery order from the roots, children mostly after parents: sweep back to front until
  // nothing changes (a pass or two on these graphs).
  for (bool changed = true; changed;) {
    changed = false;
    for (size_t n = g.nodes.size(); n-- > 0;) {
      if (p.needed[n]) continue;
      for (const auto& e : g.nodes[n]->next_edges()) {
        if (e.function && p.runs(g.index.at(e.function.get()))) {
          p.needed[n] = true;
          changed = true;
          break;
        }
      }
    }
  }
  return p;
}

std::string engine_words(const std::string& msg) { return msg; }

// Hands `grads` (one per edge) to the edges' nodes, pushing those that become ready.
void deliver(Graph& g, const Plan& p, const std::vector<Edge>& edges, variable_list& grads,
             std::vector<std::unique_ptr<InputBuffer>>& buffers,
             std::priority_queue<std::pair<uint64_t, size_t>>& ready) {
  for (size_t i = 0; i < grads.size(); ++i) {
    const Edge& next = edges[i];
    if (!next.is_valid()) continue;
    size_t n = g.index.at(next.function.get());
    bool now = --g.deps[n] == 0;
    if (!buffers[n]) {
      if (!p.runs(n)) continue;
      buffers[n] = std::make_unique<InputBuffer>(next.function->num_inputs());
    }
    buffers[n]->add(next.input_nr, std::move(grads[i]), std::nullopt, std::nullopt, next.function.get());
    if (now) ready.emplace(next.function->sequence_nr(), n);
  }
}

}  // namespace

bool sweep(const std::vector<Edge>& roots, variable_list grads, bool keep_graph, const std::vector<Edge>& wanted,
           variable_list* results) {
  if (torch::autograd::AnomalyMode::is_enabled()) return false;
  Graph g;
  if (!g.collect(roots)) return false;
  // As Engine::execute: the roots' gradients are checked (and cast) before any node runs.
  torch::autograd::validate_outputs(roots, grads, engine_words);
  Plan p = plan(g, wanted);
  std::vector<std::unique_ptr<InputBuffer>> buffers(g.nodes.size());
  std::priority_queue<std::pair<uint64_t, size_t>> ready;
  if (results) results->assign(wanted.size(), at::Tensor());
  at::AutoGradMode no_grad(false);
  deliver(g, p, roots, grads, buffers, ready);
  while (!ready.empty()) {
    size_t n = ready.top().second;
    ready.pop();
    Node* fn = g.nodes[n];
    auto buffer = std::move(buffers[n]);
    for (const auto& [slot, at] : p.captured[n]) (*results)[at] = buffer->buffer[slot];
    if (!p.needed[n]) continue;
    if (!keep_graph) fn->will_release_variables();
    variable_list outputs = (*fn)(std::move(buffer->buffer));
    torch::autograd::validate_outputs(fn->next_edges(), outputs, [fn](const std::string& msg) {
      return "Function " + fn->name() + " returned an " + msg;
    });
    if (!keep_graph) fn->release_variables();
    deliver(g, p, fn->next_edges(), outputs, buffers, ready);
  }
  return true;
}

}  // namespace shardfuzz
