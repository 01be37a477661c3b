//! The router subject: torchtitan's MoE router, twice: an unsharded libtorch reference and a
//! sharded version on the simulated DTensor, in the revisions upstream went through, with the
//! backward pass at torchtitan's MoE boundaries (docs/design.md, docs/backward.md). Its case
//! spec, generator, shrink candidates, oracles, known upstream bugs and explanations make it a
//! [`harness::Subject`].

pub mod backward;
pub mod body;
pub mod config;
pub mod contract;
pub mod dispatch;
pub mod explain;
pub mod export;
pub mod generate;
pub mod inputs;
pub mod judge;
pub mod known;
pub mod reference;
pub mod revision;
pub mod run;
pub mod sharded;
pub mod shrink;
pub mod spec;
pub mod subject;
pub mod tolerance;
pub mod v1;
pub mod value;

pub use config::{Groups, Preset, RouterConfig, RouterOptions, ScoreFunc};
pub use revision::{RouterRev, Size1};
pub use spec::RouterSpec;

/// What the router and MoE.forward's routing part produce, for either side.
#[derive(Debug)]
pub struct RouterOutputs<T> {
    pub topk_scores: T,
    pub topk_ids: T,
    pub scores: T,
    pub routing_map: T,
    pub counts: T,
    /// The node-limited routing mask (B, L, G), when expert groups are on.
    pub group_mask: Option<T>,
}

impl<T> RouterOutputs<T> {
    /// The outputs of a run by name (shallow copies), when every one is there.
    pub(crate) fn from_named(n: &harness::run::Named<T>, copy: impl Fn(&T) -> T) -> Option<RouterOutputs<T>> {
        let get = |name: &str| n.get(name).map(&copy);
        Some(RouterOutputs {
            topk_scores: get("topk_scores")?,
            topk_ids: get("topk_ids")?,
            scores: get("scores")?,
            routing_map: get("routing_map")?,
            counts: get("counts")?,
            group_mask: get("group_mask"),
        })
    }
}
