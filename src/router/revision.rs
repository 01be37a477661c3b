//! Which router code and which DTensor rules a case runs (docs/design.md; the case file's
//! `revision`, docs/formats.md).

use crate::dtensor::RuleSet;
use serde::{Deserialize, Serialize};
use std::fmt;

crate::named_enum! {
    /// The router code under test.
    pub enum RouterRev("router revision") {
        /// Before torchtitan#3515: the routing-map scatter under `local_map(in=(scores, ids)
        /// placements, out=scores placements)`; the group-mask scatter a bare in-place `scatter_`.
        LocalMapCounts = "local_map_counts",
        /// torchtitan#3515 (still so at the latest commit): both scatters bare in-place `scatter_`.
        InplaceScatter = "inplace_scatter",
        /// Both scatters out-of-place `scatter` (the alternative reported in torchtitan#3753).
        OutOfPlaceScatter = "out_of_place_scatter",
        /// torchtitan#3753: both scatters under `local_map` with the live DTensors' placements.
        LocalMapBoth = "local_map_both",
    }
}

crate::named_enum! {
    /// How declared contracts treat size-1 mesh axes (torchtitan#3762).
    pub enum Size1("size1 rule") {
        /// Before #3762: only Shard on a size-1 axis resolves to Replicate; Partial stays.
        Keep = "keep",
        /// After #3762: Shard and Partial on a size-1 axis resolve to Replicate.
        Normalize = "normalize",
    }
}

/// One value per revision axis (the case's `revision` object).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revision {
    pub router: RouterRev,
    pub rules: RuleSet,
    pub size1: Size1,
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} / {} / size1={}", self.router, self.rules, self.size1)
    }
}
