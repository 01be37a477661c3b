//! The known upstream bugs of the comparison table (docs/design.md, "what upstream did"): each is a family of
//! signatures, so reports can say which were found and `bench` can time how fast each is found.

use super::case::Case;
use super::oracle::Class;
use super::signature::Signature;
use crate::dtensor::RuleSet;
use crate::router::backward::Boundary;
use crate::router::{Program, RouterRev, Size1};

/// The gate weight's gradient of `boundary`, Replicate-labelled over unequal per-rank shares
/// (`replica`) or never reduced (`grad` missing_reduction), on more than one rank.
fn unreduced_gate(p: &Signature, case: &Case, boundary: Boundary) -> bool {
    let mechanism = match p.class {
        Class::Replica => true,
        Class::Grad => p.key.starts_with("missing_reduction"),
        _ => false,
    };
    mechanism
        && p.program == Program::Boundary(boundary)
        && p.output.as_deref() == Some("gate.weight")
        && case.ranks() > 1
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Known {
    /// torch-2.12: `scatter_` on token-sharded inputs needs a placement change (T3753, §7).
    InplaceScatter212,
    /// torch-2.12: the out-of-place scatter falls back to Replicate, counts lose their Partial
    /// contract (T3753 c1).
    OutOfPlaceReplicate212,
    /// `size1=keep`: Partial on a size-1 mesh axis is not normalised to Replicate (#3762).
    Size1Keep,
    /// torch-2.13: a sequence shorter than its shard count raises at the gate's view (§10.1).
    ShortSeq213,
    /// local_map re-wraps uneven shards with rank-dependent global shapes (§9.2 d2).
    LocalMapShapes,
    /// Before #2416: the gate's output `to_local()` labels per-rank score gradients Replicate,
    /// so the gate weight's gradient is never reduced and the TP ranks' copies drift apart
    /// (torchtitan#2387): with tokens split over ranks or TP-sharded experts without
    /// score_before_experts.
    RouterDiverges2387,
    /// #3654 to #4054: without EP the experts' local_map gets no in_grad_placements, so the
    /// gate values' partial gradients are labelled Replicate (torchtitan#4054).
    NoInGrad4054,
}

impl Known {
    pub const ALL: [Known; 7] = [
        Known::InplaceScatter212,
        Known::OutOfPlaceReplicate212,
        Known::Size1Keep,
        Known::ShortSeq213,
        Known::LocalMapShapes,
        Known::RouterDiverges2387,
        Known::NoInGrad4054,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Known::InplaceScatter212 => "inplace-scatter-error (torch-2.12)",
            Known::OutOfPlaceReplicate212 => "out-of-place Replicate counts (torch-2.12)",
            Known::Size1Keep => "size1=keep contract mismatch (#3762)",
            Known::ShortSeq213 => "sequence shorter than shards (torch-2.13)",
            Known::LocalMapShapes => "local_map rank-dependent shapes",
            Known::RouterDiverges2387 => "router gradient never reduced, ranks diverge (#2387, tt-pre2416)",
            Known::NoInGrad4054 => "experts' in_grad_placements dropped without EP (#4054, tt-3654)",
        }
    }

    /// True when a divergence with signature `p` on `case` is an instance of this bug.
    pub fn matches(self, p: &Signature, case: &Case) -> bool {
        let counts_placement = p.class == Class::Placement && p.output.as_deref() == Some("counts");
        let mismatch = |m: &str| p.key.split(',').any(|k| k == m);
        match self {
            Known::InplaceScatter212 => {
                p.class == Class::Error
                    && p.rules == RuleSet::Torch212
                    && p.key.contains("inplace_placement_change@aten.scatter_")
            }
            Known::OutOfPlaceReplicate212 => {
                counts_placement
                    && p.program == Program::Router(RouterRev::OutOfPlaceScatter)
                    && p.rules == RuleSet::Torch212
                    && mismatch("P(sum)->R")
            }
            // The placement oracle marks mismatches on size-1 mesh axes with `@1`.
            Known::Size1Keep => counts_placement && case.revision.size1 == Size1::Keep && mismatch("P(sum)->R@1"),
            Known::ShortSeq213 => {
                p.class == Class::Error && p.rules == RuleSet::Torch213 && p.key.ends_with("view_of_sharded_dim") && {
                    let n = crate::placement::layout::shard_counts_on(&case.mesh.shape, &case.layout.x, 3);
                    case.dims.batch < n[0] || case.dims.seq < n[1]
                }
            }
            Known::RouterDiverges2387 => unreduced_gate(p, case, Boundary::Pre2416),
            Known::NoInGrad4054 => {
                unreduced_gate(p, case, Boundary::T3654) && case.backward.as_ref().is_some_and(|b| !b.ep)
            }
            Known::LocalMapShapes => {
                p.class == Class::Shape
                    && matches!(p.program, Program::Router(RouterRev::LocalMapCounts | RouterRev::LocalMapBoth))
                    && p.key == "rank_dependent"
            }
        }
    }

    /// The known bugs a divergence is an instance of.
    pub fn of(signature: &Signature, case: &Case) -> Vec<Known> {
        Known::ALL.into_iter().filter(|k| k.matches(signature, case)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::generate::{nth, GenConfig};
    use crate::placement::Placement;

    fn sig(s: &str) -> Signature {
        s.parse().unwrap()
    }

    #[test]
    fn size1_keep_needs_a_size1_axis() {
        let mut c = nth(0, 0, &GenConfig::default());
        c.mesh.shape = vec![1, 2];
        c.mesh.names = vec!["dp_shard".into(), "tp".into()];
        c.revision.size1 = Size1::Keep;
        c.layout.counts_contract = vec![Placement::Partial(crate::placement::ReduceOp::Sum), Placement::Replicate];
        let at1 = sig("placement:counts:inplace_scatter:torch-2.13:P(sum)->R@1");
        assert!(Known::Size1Keep.matches(&at1, &c));
        assert!(!Known::Size1Keep.matches(&sig("placement:counts:inplace_scatter:torch-2.13:P(sum)->R"), &c));
        c.revision.size1 = Size1::Normalize;
        assert!(!Known::Size1Keep.matches(&at1, &c));
    }

    #[test]
    fn families_are_told_apart() {
        let c = nth(0, 0, &GenConfig::default());
        assert_eq!(
            Known::of(&sig("shape:routing_map:local_map_both:torch-2.13:rank_dependent"), &c),
            vec![Known::LocalMapShapes]
        );
        assert!(Known::of(&sig("shape:routing_map:inplace_scatter:torch-2.13:rank_dependent"), &c).is_empty());
        assert_eq!(
            Known::of(
                &sig("error:-:inplace_scatter:torch-2.12:RuntimeError:inplace_placement_change@aten.scatter_.value"),
                &c
            ),
            vec![Known::InplaceScatter212]
        );
        assert_eq!(
            Known::of(&sig("placement:counts:out_of_place_scatter:torch-2.12:P(sum)->R"), &c),
            vec![Known::OutOfPlaceReplicate212]
        );
        assert!(Known::of(&sig("placement:counts:out_of_place_scatter:torch-2.13:P(sum)->R"), &c).is_empty());
    }
}
