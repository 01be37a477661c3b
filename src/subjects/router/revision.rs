//! Which router code a case runs and how its contracts treat size-1 axes (docs/design.md; the
//! case's `subject.revision`, docs/formats.md).

names::named_enum! {
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

names::named_enum! {
    /// How declared contracts treat size-1 mesh axes (torchtitan#3762).
    pub enum Size1("size1 rule") {
        /// Before #3762: only Shard on a size-1 axis resolves to Replicate; Partial stays.
        Keep = "keep",
        /// After #3762: Shard and Partial on a size-1 axis resolve to Replicate.
        Normalize = "normalize",
    }
}
