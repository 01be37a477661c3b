//! The autograd tape: every op on tracked values records a backward closure; `backward` runs
//! them in reverse order, accumulating per-rank gradients. Collectives and conversions record
//! the library's backward data movement (logged through `Comm`); rank-local ops record libtorch
//! graphs per rank and take their vector-Jacobian products.

use crate::comm::Comm;
use crate::error::{Result, SpmdError};
use std::collections::HashMap;
use tch::Tensor;

/// Given the output gradients (per output, per rank; None where none arrived), the input
/// gradients (per input, per rank; None for inputs that take none).
pub(crate) type BackFn = Box<dyn Fn(&mut Comm, &[Option<Vec<Tensor>>]) -> Result<Vec<Option<Vec<Tensor>>>>>;

struct Node {
    inputs: Vec<Option<usize>>,
    outputs: Vec<usize>,
    back: BackFn,
}

#[derive(Default)]
pub(crate) struct Tape {
    nodes: Vec<Node>,
    next: usize,
}

impl Tape {
    pub fn fresh(&mut self) -> usize {
        self.next += 1;
        self.next
    }

    /// Records an op; returns the ids of its outputs.
    pub fn record(&mut self, inputs: Vec<Option<usize>>, n_out: usize, back: BackFn) -> Vec<usize> {
        let outputs: Vec<usize> = (0..n_out).map(|_| self.fresh()).collect();
        self.nodes.push(Node { inputs, outputs: outputs.clone(), back });
        outputs
    }

    pub fn backward(
        &mut self,
        comm: &mut Comm,
        root: usize,
        grad: Vec<Tensor>,
        leaves: &mut HashMap<usize, Vec<Tensor>>,
    ) -> Result<()> {
        let mut grads: HashMap<usize, Vec<Tensor>> = HashMap::new();
        grads.insert(root, grad);
        let nodes = std::mem::take(&mut self.nodes);
        let produced: std::collections::HashSet<usize> = nodes.iter().flat_map(|n| n.outputs.clone()).collect();
        let result = (|| {
            for node in nodes.iter().rev() {
                let outs: Vec<Option<Vec<Tensor>>> = node.outputs.iter().map(|o| grads.remove(o)).collect();
                if outs.iter().all(|g| g.is_none()) {
                    continue;
                }
                let ins = (node.back)(comm, &outs)?;
                if ins.len() != node.inputs.len() {
                    return Err(SpmdError::Runtime("a backward returned the wrong number of gradients".into()));
                }
                for (id, g) in node.inputs.iter().zip(ins) {
                    let (Some(id), Some(g)) = (id, g) else { continue };
                    accumulate(&mut grads, *id, g);
                }
            }
            Ok(())
        })();
        self.nodes = nodes;
        result?;
        for (id, g) in grads {
            if !produced.contains(&id) {
                accumulate(leaves, id, g);
            }
        }
        Ok(())
    }
}

fn accumulate(grads: &mut HashMap<usize, Vec<Tensor>>, id: usize, g: Vec<Tensor>) {
    match grads.get_mut(&id) {
        Some(acc) => {
            for (a, b) in acc.iter_mut().zip(g) {
                *a = &*a + b;
            }
        }
        None => {
            grads.insert(id, g);
        }
    }
}
