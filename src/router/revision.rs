//! Which router code and which DTensor rules a case runs (router.md §9, case-format.md
//! `revision`).

use crate::dtensor::RuleSet;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The router code under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouterRev {
    /// Before torchtitan#3515: the routing-map scatter under `local_map(in=(scores, ids)
    /// placements, out=scores placements)`; the group-mask scatter a bare in-place `scatter_`.
    LocalMapCounts,
    /// torchtitan#3515 (still so at the latest commit): both scatters bare in-place `scatter_`.
    InplaceScatter,
    /// Both scatters out-of-place `scatter` (the alternative reported in torchtitan#3753).
    OutOfPlaceScatter,
    /// torchtitan#3753: both scatters under `local_map` with the live DTensors' placements.
    LocalMapBoth,
}

impl RouterRev {
    pub const ALL: [RouterRev; 4] =
        [RouterRev::LocalMapCounts, RouterRev::InplaceScatter, RouterRev::OutOfPlaceScatter, RouterRev::LocalMapBoth];

    pub fn name(self) -> &'static str {
        match self {
            RouterRev::LocalMapCounts => "local_map_counts",
            RouterRev::InplaceScatter => "inplace_scatter",
            RouterRev::OutOfPlaceScatter => "out_of_place_scatter",
            RouterRev::LocalMapBoth => "local_map_both",
        }
    }
}

impl std::str::FromStr for RouterRev {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        RouterRev::ALL.into_iter().find(|r| r.name() == s).ok_or_else(|| {
            format!("unknown router revision '{s}' (expected local_map_counts, inplace_scatter, out_of_place_scatter or local_map_both)")
        })
    }
}

impl fmt::Display for RouterRev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How declared contracts treat size-1 mesh axes (torchtitan#3762).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Size1 {
    /// Before #3762: only Shard on a size-1 axis resolves to Replicate; Partial stays.
    Keep,
    /// After #3762: Shard and Partial on a size-1 axis resolve to Replicate.
    Normalize,
}

impl Size1 {
    pub fn name(self) -> &'static str {
        match self {
            Size1::Keep => "keep",
            Size1::Normalize => "normalize",
        }
    }
}

impl fmt::Display for Size1 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One value per revision axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
