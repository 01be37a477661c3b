//! The known upstream bugs of the comparison table (docs/design.md, "what upstream did"): each is a family of
//! signatures, so reports can say which were found and `bench` can time how fast each is found.

use crate::backward::Boundary;
use crate::spec::RouterSpec;
use crate::{RouterRev, Size1};
use dtensor::RuleSet;
use harness::case::Common;
use harness::oracle::Class;
use harness::Signature;
use placement::Placement;

/// The gate weight's gradient of `boundary`, Replicate-labelled over unequal per-rank shares
/// (`replica`) or never reduced (`grad` missing_reduction), on more than one rank.
/// torchtitan's token layout: tokens sharded (batch or sequence) on some mesh axis of size > 1,
/// nothing else sharded. The 2.12 scatter bugs are about token-sharded scores; the same error on
/// an expert-sharded what-if layout is another mechanism.
fn token_sharded_scores(c: &Common, s: &RouterSpec) -> bool {
    let l = &s.layout;
    let all_r = |ps: &[Placement]| ps.iter().all(|p| *p == Placement::Replicate);
    let token = |p: &Placement| matches!(p, Placement::Shard(0 | 1 | -2 | -3));
    all_r(&l.gate)
        && l.expert_bias.as_deref().is_none_or(all_r)
        && l.x.iter().all(|p| token(p) || *p == Placement::Replicate)
        && l.x.iter().zip(&c.mesh.shape).any(|(p, &n)| token(p) && n > 1)
}

/// A gradient verdict of boundary revision `boundary` whose path crossed `site`: the label
/// put there is the mechanism, whichever tensor (gate.weight, gate.bias, x) shows it.
fn through(p: &Signature, c: &Common, boundary: Boundary, site: &str) -> bool {
    let path = p.key.split_once('@').map_or("", |(_, path)| path);
    matches!(p.class, Class::Grad | Class::Replica)
        && p.program == boundary.name()
        && path.split('>').any(|s| s == site)
        && c.ranks() > 1
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Known {
    /// torch-2.12: `scatter_` on token-sharded inputs needs a placement change (torchtitan#3515, before pytorch#186149).
    InplaceScatter212,
    /// torch-2.12: the out-of-place scatter falls back to Replicate, counts lose their Partial
    /// contract (T3753 c1).
    OutOfPlaceReplicate212,
    /// `size1=keep`: Partial on a size-1 mesh axis is not normalised to Replicate (#3762).
    Size1Keep,
    /// torch-2.13 and 2.14: a sharded token dim shorter than its shard count, or of length 1,
    /// cannot be flattened by the gate's view, which raises (2.12 all-gathers instead).
    ShortTokens,
    /// local_map re-wraps uneven shards with rank-dependent global shapes (docs/design.md).
    LocalMapShapes,
    /// Before #2416: the gate's output `to_local()` labels per-rank score gradients Replicate,
    /// so the gate weight's gradient is never reduced and the TP ranks' copies drift apart
    /// (torchtitan#2387): with tokens split over ranks or TP-sharded experts without
    /// score_before_experts.
    RouterDiverges2387,
    /// #3654 to #4054: without EP the experts' local_map gets no in_grad_placements, so the
    /// gate values' partial gradients are labelled Replicate (torchtitan#4054).
    NoInGrad4054,
    /// #2416 to #3386: the gate's `from_local(R)` has no grad label, so its backward all-reduces
    /// the router's share of dx, and the MoE input's `to_local(grad_placements=P)` then sums
    /// those full copies again: x.grad gets n times the router's share. Found here; no upstream
    /// report (docs/findings.md).
    GateInputTwice2416,
    /// The closed PR #2388 labels the gate output P also where #1878's all-reduce already made
    /// every rank's gradient complete (score_before_experts with TP-sharded experts): every
    /// router gradient n times. Found here (docs/findings.md).
    Pr2388Sbe,
    /// torchtitan's ReordererSequenceParallel refuses a token count the TP degree does not
    /// divide (a ValueError by design, not a wrong result).
    UnevenTokenSplit,
}

impl Known {
    pub const ALL: [Known; 10] = [
        Known::InplaceScatter212,
        Known::OutOfPlaceReplicate212,
        Known::Size1Keep,
        Known::ShortTokens,
        Known::LocalMapShapes,
        Known::RouterDiverges2387,
        Known::NoInGrad4054,
        Known::GateInputTwice2416,
        Known::Pr2388Sbe,
        Known::UnevenTokenSplit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Known::InplaceScatter212 => "inplace-scatter-error (torch-2.12)",
            Known::OutOfPlaceReplicate212 => "out-of-place Replicate counts (torch-2.12)",
            Known::Size1Keep => "size1=keep contract mismatch (#3762)",
            Known::ShortTokens => "token dim shorter than its shards, or 1, at the gate's view (torch-2.13+)",
            Known::LocalMapShapes => "local_map rank-dependent shapes",
            Known::RouterDiverges2387 => "router gradient never reduced, ranks diverge (#2387, tt-pre2416)",
            Known::NoInGrad4054 => "experts' in_grad_placements dropped without EP (#4054, tt-3654)",
            Known::GateInputTwice2416 => "router's dx reduced twice at the MoE input (tt-2416; new)",
            Known::Pr2388Sbe => "gate output labelled P after #1878's all-reduce (closed PR #2388; new)",
            Known::UnevenTokenSplit => "token split refuses T not divisible by TP (torchtitan ValueError)",
        }
    }

    /// True when a divergence with signature `p` on `case` is an instance of this bug.
    pub fn matches(self, p: &Signature, c: &Common, s: &RouterSpec) -> bool {
        let counts_placement = p.class == Class::Placement && p.output.as_deref() == Some("counts");
        let mismatch = |m: &str| p.key.split(',').any(|k| k == m);
        match self {
            Known::InplaceScatter212 => {
                p.class == Class::Error
                    && p.rules == RuleSet::Torch212
                    && p.key.contains("inplace_placement_change@aten.scatter_")
                    && token_sharded_scores(c, s)
            }
            Known::OutOfPlaceReplicate212 => {
                counts_placement
                    && p.program == RouterRev::OutOfPlaceScatter.name()
                    && p.rules == RuleSet::Torch212
                    && mismatch("P(sum)->R")
                    && token_sharded_scores(c, s)
            }
            // The placement oracle marks mismatches on size-1 mesh axes with `@1`.
            Known::Size1Keep => counts_placement && s.revision.size1 == Size1::Keep && mismatch("P(sum)->R@1"),
            Known::ShortTokens => {
                p.class == Class::Error && p.rules != RuleSet::Torch212 && p.key.ends_with("view_of_sharded_dim") && {
                    let n = placement::layout::shard_counts_on(&c.mesh.shape, &s.layout.x, 3);
                    let sharded = |d: i64| s.layout.x.contains(&Placement::Shard(d));
                    let short = |d: usize, len: usize| len < n[d] || (len == 1 && sharded(d as i64));
                    short(0, s.dims.batch) || short(1, s.dims.seq)
                }
            }
            Known::RouterDiverges2387 => through(p, c, Boundary::Pre2416, "gate.to_local"),
            Known::NoInGrad4054 => {
                through(p, c, Boundary::T3654, "experts.local_map") && s.backward.as_ref().is_some_and(|b| !b.ep)
            }
            Known::GateInputTwice2416 => {
                through(p, c, Boundary::T2416, "gate.from_local")
                    && p.output.as_deref() == Some("x")
                    && p.key.starts_with("reduced_twice@")
            }
            Known::Pr2388Sbe => {
                through(p, c, Boundary::Pr2388, "gate.to_local")
                    && p.key.starts_with("reduced_twice@")
                    && s.backward.as_ref().is_some_and(|b| b.score_before_experts)
            }
            Known::UnevenTokenSplit => {
                p.class == Class::Error
                    && [Boundary::Pre2416, Boundary::Pr2388, Boundary::T2416].iter().any(|b| p.program == b.name())
                    && p.key.starts_with("ValueError:uneven_split_of_tokens")
            }
            Known::LocalMapShapes => {
                p.class == Class::Shape
                    && [RouterRev::LocalMapCounts, RouterRev::LocalMapBoth].iter().any(|r| p.program == r.name())
                    && p.key == "rank_dependent"
            }
        }
    }

    /// The known bugs a divergence is an instance of.
    pub fn of(signature: &Signature, c: &Common, s: &RouterSpec) -> Vec<Known> {
        Known::ALL.into_iter().filter(|k| k.matches(signature, c, s)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::RouterGen;
    use harness::case::Case;
    use harness::generate::GenCommon;
    use harness::stream::nth;

    fn case0() -> Case<RouterSpec> {
        nth(0, 0, &GenCommon::default(), &RouterGen::default())
    }

    fn sig(s: &str) -> Signature {
        s.parse().unwrap()
    }

    #[test]
    fn size1_keep_needs_a_size1_axis() {
        let mut c = case0();
        c.mesh.shape = vec![1, 2];
        c.mesh.names = vec!["dp_shard".into(), "tp".into()];
        c.subject.revision.size1 = Size1::Keep;
        c.subject.layout.counts_contract = vec![Placement::Partial(placement::ReduceOp::Sum), Placement::Replicate];
        let at1 = sig("placement:counts:inplace_scatter:torch-2.13:P(sum)->R@1");
        assert!(Known::Size1Keep.matches(&at1, &c, &c.subject));
        assert!(!Known::Size1Keep.matches(
            &sig("placement:counts:inplace_scatter:torch-2.13:P(sum)->R"),
            &c,
            &c.subject
        ));
        c.subject.revision.size1 = Size1::Normalize;
        assert!(!Known::Size1Keep.matches(&at1, &c, &c.subject));
    }

    #[test]
    fn families_are_told_apart() {
        let mut c = case0();
        (c.mesh.shape, c.mesh.names) = (vec![2], vec!["tp".into()]);
        (c.subject.layout.x, c.subject.layout.gate) = (vec![Placement::Shard(1)], vec![Placement::Replicate]);
        c.subject.layout.expert_bias = c.subject.router.expert_bias.then(|| vec![Placement::Replicate]);
        assert_eq!(
            Known::of(&sig("shape:routing_map:local_map_both:torch-2.13:rank_dependent"), &c, &c.subject),
            vec![Known::LocalMapShapes]
        );
        assert!(
            Known::of(&sig("shape:routing_map:inplace_scatter:torch-2.13:rank_dependent"), &c, &c.subject).is_empty()
        );
        assert_eq!(
            Known::of(
                &sig("error:-:inplace_scatter:torch-2.12:RuntimeError:inplace_placement_change@aten.scatter_.value"),
                &c,
                &c.subject
            ),
            vec![Known::InplaceScatter212]
        );
        assert_eq!(
            Known::of(&sig("placement:counts:out_of_place_scatter:torch-2.12:P(sum)->R"), &c, &c.subject),
            vec![Known::OutOfPlaceReplicate212]
        );
        assert!(
            Known::of(&sig("placement:counts:out_of_place_scatter:torch-2.13:P(sum)->R"), &c, &c.subject).is_empty()
        );
        // The same error on an expert-sharded what-if layout is another mechanism.
        c.subject.layout.gate = vec![Placement::Shard(0)];
        let inplace =
            sig("error:-:inplace_scatter:torch-2.12:RuntimeError:inplace_placement_change@aten.scatter_.value");
        assert!(Known::of(&inplace, &c, &c.subject).is_empty());
    }

    #[test]
    fn gradient_families_follow_the_site_and_the_mechanism() {
        let mut c = case0();
        c.mesh.shape = vec![2];
        let path = "gate.to_local>gate.from_local>moe.to_local>moe.input";
        let twice = sig(&format!("grad:x:tt-2416:torch-2.13:reduced_twice@{path}"));
        assert_eq!(Known::of(&twice, &c, &c.subject), vec![Known::GateInputTwice2416]);
        assert!(Known::of(&sig(&format!("grad:x:tt-2416:torch-2.13:wrong@{path}")), &c, &c.subject).is_empty());
        assert!(
            Known::of(&sig("grad:gate.weight:tt-clean:torch-2.13:wrong@experts.local_map"), &c, &c.subject).is_empty()
        );
        let replica = sig(&format!("replica:x:tt-pre2416:torch-2.14:R@{path}"));
        assert_eq!(Known::of(&replica, &c, &c.subject), vec![Known::RouterDiverges2387]);
        c.mesh.shape = vec![1];
        assert!(Known::of(&replica, &c, &c.subject).is_empty(), "one rank has nothing to reduce");
    }

    #[test]
    fn short_tokens_need_a_sharded_token_dim_too_short_to_flatten() {
        let mut c = case0();
        (c.mesh.shape, c.subject.layout.x) = (vec![1], vec![Placement::Shard(1)]);
        (c.subject.dims.batch, c.subject.dims.seq) = (2, 1);
        let view = |rules: &str| sig(&format!("error:-:tt-clean:{rules}:RuntimeError:view_of_sharded_dim"));
        assert_eq!(Known::of(&view("torch-2.14"), &c, &c.subject), vec![Known::ShortTokens]);
        assert!(Known::of(&view("torch-2.12"), &c, &c.subject).is_empty());
        c.subject.dims.seq = 3;
        assert!(Known::of(&view("torch-2.13"), &c, &c.subject).is_empty());
        c.mesh.shape = vec![4];
        assert_eq!(Known::of(&view("torch-2.13"), &c, &c.subject), vec![Known::ShortTokens]);
    }
}
