//! The MoE router of torchtitan, twice: an unsharded libtorch reference and a sharded version
//! on the simulated DTensor, in the revisions upstream went through (docs/design.md).

pub mod backward;
pub mod body;
pub mod config;
pub mod contract;
pub mod dispatch;
pub mod reference;
pub mod revision;
pub mod sharded;

pub use config::{Groups, Preset, RouterConfig, RouterOptions, ScoreFunc};
pub use revision::{Revision, RouterRev, Size1};

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
    /// Every output through `f`; `None` when `f` fails on any.
    pub fn try_map<U>(&self, mut f: impl FnMut(&T) -> Option<U>) -> Option<RouterOutputs<U>> {
        Some(RouterOutputs {
            topk_scores: f(&self.topk_scores)?,
            topk_ids: f(&self.topk_ids)?,
            scores: f(&self.scores)?,
            routing_map: f(&self.routing_map)?,
            counts: f(&self.counts)?,
            group_mask: match &self.group_mask {
                Some(g) => Some(f(g)?),
                None => None,
            },
        })
    }

    /// Outputs in report order with their names.
    pub fn named(&self) -> Vec<(&'static str, &T)> {
        let mut v = vec![
            ("topk_scores", &self.topk_scores),
            ("topk_ids", &self.topk_ids),
            ("scores", &self.scores),
            ("routing_map", &self.routing_map),
            ("counts", &self.counts),
        ];
        if let Some(g) = &self.group_mask {
            v.push(("group_mask", g));
        }
        v
    }
}

/// What one row of a comparison is about: a router revision (the forward) or a boundary
/// revision (the backward).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Program {
    Router(RouterRev),
    Boundary(backward::Boundary),
}

impl Program {
    pub fn name(self) -> &'static str {
        match self {
            Program::Router(r) => r.name(),
            Program::Boundary(b) => b.name(),
        }
    }
}

impl std::fmt::Display for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Program {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.parse()
            .map(Program::Router)
            .or_else(|_| s.parse().map(Program::Boundary))
            .map_err(|_| format!("unknown router or boundary revision '{s}'"))
    }
}

crate::serde_as_str!(Program);
