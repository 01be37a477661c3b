//! A simulated DTensor on libtorch: every rank of a device mesh holds a local `tch::Tensor` on
//! the chosen device, placements follow PyTorch's torch.chunk layout, collectives are pure
//! functions over mesh-dim fibers and are logged, and each op is sharded by PyTorch's rules for
//! the selected release (`rules::RuleSet`).

pub mod autograd;
pub mod comm;
pub mod device;
pub mod dispatch;
pub mod error;
pub mod local;
pub mod local_map;
pub mod meta;
pub mod op;
pub mod plant;
pub mod redistribute;
pub mod rules;
pub mod tensor;

pub use comm::CommRecord;
pub use dispatch::{call, call_mixed, TArg};
pub use error::{DTensorError, Result};
pub use meta::{DType, Meta};
pub use op::Op;
pub use rules::RuleSet;
pub use tensor::DTensor;

/// State shared by the ops of one program run: the rule set, and the communication log with the
/// label of the value being computed (the `tensor` field of each record).
#[derive(Debug)]
pub struct Ctx {
    pub rules: RuleSet,
    pub comms: Vec<CommRecord>,
    pub label: String,
}

impl Ctx {
    pub fn new(rules: RuleSet) -> Ctx {
        local::skip_cpp_backtraces();
        Ctx { rules, comms: Vec::new(), label: String::new() }
    }

    /// Names the value the next ops compute, for the communication log.
    pub fn label(&mut self, name: &str) {
        self.label.clear();
        self.label.push_str(name);
    }

    /// One op with DTensor arguments and a single output.
    pub fn op1(&mut self, op: Op, args: &[&DTensor]) -> Result<DTensor> {
        Ok(call(self, &op, args)?.swap_remove(0))
    }
}
