//! The older torchtitan revisions on the DTensor backend: each known bug's smallest case
//! (docs/moe-revisions.md) diverges at the buggy revision and agrees at the fixed one, and the
//! known-bug classification names it.

use crate::spec::MoeSpec;
use crate::MoeRev;
use harness::case::Case;
use harness::oracle::{judge, Judgement};
use harness::subject::Subject;
use tch::Device;

/// A case: mesh (1, 1, tp), ep, sp, x (b, l, 8), F = 16, E = 2, K = 1, sigmoid scores.
#[allow(clippy::too_many_arguments)]
fn case(
    rev: MoeRev,
    tp: usize,
    ep: usize,
    sp: bool,
    b: usize,
    l: usize,
    shared: bool,
    backward: bool,
) -> Case<MoeSpec> {
    let text = format!(
        r#"{{"format": "shardfuzz.case/2",
  "mesh": {{"shape": [1, 1, {tp}], "names": ["dp", "cp", "tp"]}},
  "rules": "torch-2.14", "dtype": "f32", "device": "cpu",
  "data": {{"seed": 11, "style": "normal"}},
  "subject": {{"kind": "moe", "revision": "{rev}", "backend": "partial_dtensor",
    "parallel": {{"dp_replicate": 1, "ep": {ep}, "sp": {sp}}},
    "dims": {{"batch": {b}, "seq": {l}, "model": 8, "hidden": 16, "experts": 2, "top_k": 1,
             "shared_hidden": {fs}}},
    "router": {{"score_func": "sigmoid", "route_norm": false, "route_scale": 1.0, "groups": null,
               "force_load_balance": false}},
    "load_balance_coeff": null, "backward": {backward}, "trainer_checks": false}}}}"#,
        fs = if shared { "16" } else { "null" },
    );
    Case::from_json(&text).map_err(|e| e.0).unwrap()
}

pub(crate) fn verdicts(c: &Case<MoeSpec>) -> Judgement {
    c.validate().unwrap();
    let (run, extra) = harness::runner::run(c, Device::Cpu).unwrap();
    judge(c, &run, &extra)
}

pub(crate) fn outputs(j: &Judgement) -> Vec<String> {
    j.verdicts.iter().map(|v| format!("{}:{}", v.class, v.output.as_deref().unwrap_or("-"))).collect()
}

pub(crate) fn known(c: &Case<MoeSpec>, j: &Judgement) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = j.verdicts.iter().flat_map(|v| c.subject.known(c, &v.signature(c))).collect();
    v.sort();
    v.dedup();
    v
}

/// #3604: EP on, tp = 2, B = 2: the routed rows of (0, 2..) and (1, ..) swap; fixed by #3604.
#[test]
fn pre3604_puts_routed_rows_at_wrong_tokens() {
    for sp in [false, true] {
        let bad = case(MoeRev::TtPre3604, 2, 2, sp, 2, 4, false, true);
        let j = verdicts(&bad);
        assert!(outputs(&j).iter().any(|o| o == "value:y"), "sp={sp}: {:?}", outputs(&j));
        assert_eq!(known(&bad, &j), [crate::known::Known::CombineOffset3604.name()]);
        for fixed in [MoeRev::Tt3604, MoeRev::Tt3662, MoeRev::Tt4054, MoeRev::Tt3996, MoeRev::Tt030] {
            let j = verdicts(&case(fixed, 2, 2, sp, 2, 4, false, true));
            assert!(j.verdicts.is_empty(), "{fixed} sp={sp}: {:?}", outputs(&j));
        }
    }
    // One batch row: the flat offset is right.
    assert!(verdicts(&case(MoeRev::TtPre3604, 2, 2, false, 1, 4, true, true)).verdicts.is_empty());
}

/// Uneven L with B = 2 (EP on, SP off, no trainer check): tt-3604's batch-aware offset runs out
/// of its buffer; tt-3662's per-row padding gives token (1, 2) no routed output.
#[test]
fn uneven_lengths_before_the_local_combine() {
    let c = case(MoeRev::Tt3604, 2, 2, false, 2, 3, false, false);
    let (run, _) = harness::runner::run(&c, Device::Cpu).unwrap();
    let e = run.sharded.as_ref().err().map(|e| format!("{} {e}", e.kind())).unwrap_or_default();
    assert!(e.contains("out of bounds"), "{e}");
    let j = verdicts(&c);
    let sigs: Vec<String> = j.verdicts.iter().map(|v| v.signature(&c).to_string()).collect();
    // A signature reads back as itself (campaigns send them to their shrink workers as text).
    for (v, text) in j.verdicts.iter().zip(&sigs) {
        assert_eq!(text.parse::<harness::Signature>().unwrap(), v.signature(&c));
    }
    assert_eq!(known(&c, &j), [crate::known::Known::UnevenIndex3604.name()], "{sigs:?}");
    let c = case(MoeRev::Tt3662, 2, 2, false, 2, 3, false, false);
    let j = verdicts(&c);
    assert_eq!(outputs(&j), ["value:y"]);
    assert_eq!(known(&c, &j), [crate::known::Known::UnevenRows3662.name()]);
    let c = case(MoeRev::TtPre3604, 2, 2, false, 2, 3, false, false);
    assert_eq!(known(&c, &verdicts(&c)), [crate::known::Known::CombineOffset3604.name()]);
    // From tt-3654 on, uneven EP chunks are not modelled yet.
    let (run, _) = harness::runner::run(&case(MoeRev::Tt4054, 2, 2, false, 2, 3, false, false), Device::Cpu).unwrap();
    assert!(run.sharded.is_err_and(|e| crate::run::not_modelled(&e)));
}

/// #4054: EP off, tp = 2, one token, backward: each rank keeps its own share of the gate's
/// gradient (and of x's); fixed by #4054.
#[test]
fn tt3654_leaves_the_experts_input_gradients_unreduced() {
    let bad = case(MoeRev::Tt3654, 2, 1, false, 1, 1, false, true);
    let j = verdicts(&bad);
    let o = outputs(&j);
    assert!(o.iter().any(|o| o == "value:grad.gate") && o.iter().any(|o| o == "value:x_grad"), "{o:?}");
    assert!(!o.iter().any(|o| o == "value:y"), "{o:?}");
    assert_eq!(known(&bad, &j), [crate::known::Known::NoInGrad4054.name()]);
    for fixed in [MoeRev::Tt4054, MoeRev::Tt030] {
        assert!(verdicts(&case(fixed, 2, 1, false, 1, 1, false, true)).verdicts.is_empty(), "{fixed}");
    }
    // EP on: the inputs are sequence-sharded, their gradients are the rank's own.
    assert!(verdicts(&case(MoeRev::Tt3654, 2, 2, false, 1, 2, false, true)).verdicts.is_empty());
}

/// x's gradient at tt-3654 as the real 0.3.0 layer with None in_grad_placements gives it
/// (docs/pytorch-checks/moe_revisions_030.py igp-none): without shared experts each rank its
/// share, the shares summing to the fixed gradient; with them the same value on every rank,
/// the shared part plus half the routed part (tp = 2).
#[test]
fn tt3654_x_grad_per_rank() {
    let x_grad = |rev, shared| {
        let c = case(rev, 2, 1, false, 2, 4, shared, true);
        let (run, _) = harness::runner::run(&c, Device::Cpu).unwrap();
        let s = run.sharded.unwrap();
        let g = s.get("x_grad").unwrap();
        (g.locals[0].shallow_clone(), g.locals[1].shallow_clone())
    };
    let close = |a: &tch::Tensor, b: &tch::Tensor| a.allclose(b, 1e-4, 1e-5, false);
    let (a, b) = x_grad(MoeRev::Tt3654, false);
    let (full, _) = x_grad(MoeRev::Tt4054, false);
    assert!(!close(&a, &b) && close(&(&a + &b), &full));
    let (a, b) = x_grad(MoeRev::Tt3654, true);
    let (fixed, _) = x_grad(MoeRev::Tt4054, true);
    assert!(close(&a, &b) && !close(&a, &fixed));
}

#[test]
fn the_old_sequence_check_asserts_in_parallelize() {
    let mut c = case(MoeRev::TtPre3604, 2, 2, false, 2, 2, false, false);
    c.subject.trainer_checks = true;
    let (run, _) = harness::runner::run(&c, Device::Cpu).unwrap();
    let e = run.sharded.err().map(|e| format!("{} {e}", e.kind())).unwrap_or_default();
    assert!(e.contains("AssertionError") && e.contains("2 * CP degree (1)"), "{e}");
}

/// The false-positive scan (ignored; `MOE_SCAN_CASES=2000 cargo test --release -p moe -- --ignored
/// scan --nocapture`): per modelled revision, generated cases whose verdicts are neither an
/// error the real layer raises (a one-sided error verdict) nor a known upstream bug, by output.
#[test]
#[ignore]
fn scan_unexplained_value_verdicts() {
    use harness::generate::{GenCommon, Source};
    use rand::SeedableRng;
    let n: u64 = std::env::var("MOE_SCAN_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    for rev in MoeRev::ALL.iter().copied().filter(|r| r.modelled()) {
        let own = crate::generate::MoeGen { moe_revisions: vec![rev] };
        let mut unexplained = std::collections::BTreeMap::<String, Vec<u64>>::new();
        for i in 0..n {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7000 + i);
            let _ = rng.below(2);
            let c = MoeSpec::generate(&mut rng, &GenCommon::default(), &own);
            let j = verdicts(&c);
            for v in &j.verdicts {
                if v.class != harness::oracle::Class::Error && c.subject.known(&c, &v.signature(&c)).is_empty() {
                    unexplained
                        .entry(format!("{}:{}", v.class, v.output.as_deref().unwrap_or("-")))
                        .or_default()
                        .push(i);
                }
            }
        }
        let short: Vec<String> =
            unexplained.iter().map(|(k, v)| format!("{k} x{} (first {:?})", v.len(), &v[..v.len().min(3)])).collect();
        println!("{rev}: {n} cases; unexplained: {short:?}");
    }
}

/// A case on the spmd_types backend (mesh (1, 1, tp)) with the load-balance hook on.
fn spmd_case(rev: MoeRev, tp: usize, ep: usize, sp: bool, l: usize, seed: u64) -> Case<MoeSpec> {
    let mut c = case(rev, tp, ep, sp, 1, l, false, false);
    c.subject.backend = crate::Backend::SpmdTypes;
    c.subject.load_balance_coeff = Some(1e-3);
    c.common.data.seed = Some(seed);
    c
}

/// #4154: spmd_types, EP on, tp = 2: before the fix each tp rank's hook sees only its own counts,
/// so `expert_bias` differs across the tp ranks (for some routings: sign() hides the rest);
/// the comm oracle sees the missing tp all-reduce on every routing; fixed by #4154; the DTensor
/// backend and EP off agree at both revisions.
#[test]
fn pre4154_leaves_expert_bias_unreduced_over_tp() {
    let bias = crate::known::Known::BiasTp4154.name();
    let mut found = None;
    for seed in 0..40 {
        let bad = spmd_case(MoeRev::TtPre4154, 2, 2, true, 4, seed);
        let j = verdicts(&bad);
        assert!(outputs(&j).iter().any(|o| o == "comm:hook"), "seed {seed}: {:?}", outputs(&j));
        assert_eq!(known(&bad, &j), [bias]);
        if j.verdicts.len() == 1 {
            continue;
        }
        assert!(outputs(&j).iter().all(|o| o.ends_with(":expert_bias") || o == "comm:hook"), "{:?}", outputs(&j));
        assert!(outputs(&j).iter().any(|o| o == "replica:expert_bias"), "{:?}", outputs(&j));
        found = Some(seed);
        let j = verdicts(&spmd_case(MoeRev::Tt4154, 2, 2, true, 4, seed));
        assert!(j.verdicts.is_empty(), "tt-4154 seed {seed}: {:?}", outputs(&j));
        let mut dt = spmd_case(MoeRev::TtPre4154, 2, 2, true, 4, seed);
        dt.subject.backend = crate::Backend::PartialDtensor;
        assert!(verdicts(&dt).verdicts.is_empty(), "partial_dtensor seed {seed}");
        break;
    }
    assert!(found.is_some(), "no seed of 40 showed #4154");
    for seed in 0..5 {
        assert!(verdicts(&spmd_case(MoeRev::TtPre4154, 2, 1, true, 4, seed)).verdicts.is_empty(), "EP off");
    }
}

/// tt-3386: EP on splits the flat B·L tokens over tp: right when tp divides T (also with B = 2,
/// where the sequence split of later revisions differs), an exit error when it does not.
#[test]
fn tt3386_flat_split() {
    for (b, l) in [(2, 2), (2, 3), (1, 4)] {
        let j = verdicts(&case(MoeRev::Tt3386, 2, 2, false, b, l, true, true));
        assert!(j.verdicts.is_empty(), "B={b} L={l}: {:?}", outputs(&j));
    }
    assert!(verdicts(&case(MoeRev::Tt3386, 2, 2, true, 1, 4, true, true)).verdicts.is_empty());
    for shared in [true, false] {
        let c = case(MoeRev::Tt3386, 2, 2, false, 1, 3, shared, false);
        let (run, _) = harness::runner::run(&c, Device::Cpu).unwrap();
        let e = run.sharded.as_ref().err().map(|e| e.to_string()).unwrap_or_default();
        let want = if shared { "broadcastable to [4, 8]" } else { "invalid for input of size 32" };
        assert!(e.contains(want), "{e}");
        let j = verdicts(&c);
        assert_eq!(known(&c, &j), [crate::known::Known::UnevenFlat3386.name()]);
    }
    // The same case at the later revisions: tt-pre3604's rank offset misplaces, tt-0.3.0 is not
    // modelled at uneven EP chunks; at tt-3386 EP off is fine.
    assert!(verdicts(&case(MoeRev::Tt3386, 2, 1, false, 1, 3, true, true)).verdicts.is_empty());
}

/// A `tt-head` case: mesh (dp, cp, tp), x (dp·l, 8) (l tokens per dp rank), E = 4, K = 2,
/// shared experts, load balancing on.
fn head_case(
    backend: crate::Backend,
    mesh: [usize; 3],
    ep: usize,
    sp: bool,
    l: usize,
    backward: bool,
) -> Case<MoeSpec> {
    // Built at 0.3.0 (the text is validated on its (1, 1, tp) mesh), then moved to tt-head.
    let mut c = case(MoeRev::Tt030, mesh[2], ep, sp, mesh[0], l, true, backward);
    c.subject.revision = MoeRev::TtHead;
    c.common.mesh.shape = mesh.to_vec();
    c.subject.backend = backend;
    c.subject.dims.experts = 4;
    c.subject.dims.top_k = 2;
    c.subject.load_balance_coeff = Some(1e-3);
    c.subject.trainer_checks = true;
    c
}

const HEAD_BACKENDS: [crate::Backend; 2] = [crate::Backend::SpmdTypes, crate::Backend::PartialDtensor];

/// tt-head with an even token split agrees with the reference on both backends, with y and x's
/// gradient as (T, D) sharded on dim 0 by dp, cp and (SP) tp.
#[test]
fn tt_head_even_tokens_agree() {
    use placement::Placement::{Replicate as R, Shard as S};
    let configs = [
        ([1, 1, 2], 2, true),
        ([1, 1, 2], 2, false),
        ([2, 1, 2], 2, true),
        ([2, 1, 2], 1, false),
        ([1, 2, 2], 4, true),
    ];
    for backend in HEAD_BACKENDS {
        for (mesh, ep, sp) in configs {
            let l = if mesh[1] > 1 { 8 } else { 4 };
            let c = head_case(backend, mesh, ep, sp, l, true);
            let j = verdicts(&c);
            assert!(j.verdicts.is_empty(), "{backend} {mesh:?} ep={ep} sp={sp}: {:?}", outputs(&j));
            let (run, _) = harness::runner::run(&c, Device::Cpu).unwrap();
            let reference = run.reference.as_ref().unwrap();
            let sharded = run.sharded.as_ref().unwrap_or_else(|e| panic!("{backend} {mesh:?}: {e}"));
            let t = (mesh[0] * l) as i64;
            for name in ["y", "x_grad"] {
                assert_eq!(reference.get(name).unwrap().size(), [t, 8], "{name}");
                let d = sharded.get(name).unwrap();
                assert_eq!(d.shape, [t as usize, 8], "{name}");
                let want = if sp { [S(0), S(0), S(0)] } else { [S(0), S(0), R] };
                assert_eq!(d.placements, want, "{name} {backend} {mesh:?} sp={sp}");
            }
        }
    }
}

/// tt-head: the x-gradient drop recorded at 0.3.0 (EP off, SP on, one batch row per rank, a
/// DTensor backend) is not claimed for (T, D): that class answers "not modelled".
#[test]
fn tt_head_one_row_class_not_modelled() {
    let c = head_case(crate::Backend::PartialDtensor, [1, 1, 2], 1, true, 4, true);
    let (run, _) = harness::runner::run(&c, Device::Cpu).unwrap();
    assert!(run.sharded.is_err_and(|e| crate::run::not_modelled(&e)));
    let c = head_case(crate::Backend::SpmdTypes, [1, 1, 2], 1, true, 4, true);
    assert!(verdicts(&c).verdicts.is_empty());
}

/// tt-head's checks before the layer: ep must divide dp_shard·cp·tp, the tokens per dp rank
/// the SP/CP divisor, the expert count ep; uneven T with EP on and SP off is 0.3.0's exit error
/// on spmd_types (at dim 0) and not modelled on partial_dtensor (as at 0.3.0).
#[test]
fn tt_head_checks_and_uneven_tokens() {
    let sharded_err = |c: &Case<MoeSpec>| {
        c.validate().unwrap();
        let (run, _) = harness::runner::run(c, Device::Cpu).unwrap();
        run.sharded.err().map(|e| e.to_string()).unwrap_or_default()
    };
    let c = head_case(crate::Backend::SpmdTypes, [1, 1, 2], 4, true, 4, false);
    assert!(sharded_err(&c).contains("expert_parallel_degree (4) must divide dp_shard * cp * tp (2)"));
    let c = head_case(crate::Backend::SpmdTypes, [1, 1, 2], 2, true, 3, false);
    assert!(sharded_err(&c).contains("tokens per pipeline microbatch (3) must be divisible by 2"));
    let mut c = head_case(crate::Backend::SpmdTypes, [1, 1, 2], 2, true, 4, false);
    c.subject.dims.experts = 3;
    assert!(sharded_err(&c).contains("num_experts (3) must be divisible by expert_parallel_degree (2)"));
    let c = head_case(crate::Backend::SpmdTypes, [1, 1, 2], 2, false, 3, false);
    let e = sharded_err(&c);
    assert!(e.contains("size of tensor a (4) must match the size of tensor b (3) at non-singleton dimension 0"), "{e}");
    let j = verdicts(&c);
    assert_eq!(known(&c, &j), [crate::known::Known::SpmdUnevenEpExit.name()]);
    let c = head_case(crate::Backend::PartialDtensor, [1, 1, 2], 2, false, 3, false);
    let (run, _) = harness::runner::run(&c, Device::Cpu).unwrap();
    assert!(run.sharded.is_err_and(|e| crate::run::not_modelled(&e)));
}

/// tt-head cases are invalid with batch ≠ dp or on full_dtensor; generation draws valid tt-head
/// cases on both backends and shrinking keeps batch = dp.
#[test]
fn tt_head_validation_generation_shrink() {
    use harness::generate::GenCommon;
    use rand::SeedableRng;
    let mut c = head_case(crate::Backend::SpmdTypes, [2, 1, 2], 2, true, 4, false);
    c.subject.dims.batch = 4;
    assert!(c.validate().unwrap_err().0.contains("batch must be mesh dp = 2"));
    let mut c = head_case(crate::Backend::FullDtensor, [1, 1, 2], 2, true, 4, false);
    assert!(c.validate().unwrap_err().0.contains("no full_dtensor"));
    c.subject.backend = crate::Backend::PartialDtensor;
    assert_eq!(c.subject.inputs(&c.common)[0].shape, [4, 8]);
    let own = crate::generate::MoeGen { moe_revisions: vec![MoeRev::TtHead] };
    let mut backends = std::collections::BTreeSet::new();
    let mut ran = 0;
    for i in 0..40u64 {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9000 + i);
        let c = MoeSpec::generate(&mut rng, &GenCommon::default(), &own);
        assert_eq!(c.subject.revision, MoeRev::TtHead);
        c.validate().unwrap();
        assert_eq!(c.subject.dims.batch, c.mesh.shape[0]);
        backends.insert(c.subject.backend);
        for n in crate::shrink::candidates(&c) {
            assert_eq!(n.subject.dims.batch, n.mesh.shape[0], "shrink of case {i}");
        }
        let j = verdicts(&c);
        let unexplained: Vec<String> = j
            .verdicts
            .iter()
            .filter(|v| v.class != harness::oracle::Class::Error && c.subject.known(&c, &v.signature(&c)).is_empty())
            .map(|v| format!("{}:{}", v.class, v.output.as_deref().unwrap_or("-")))
            .collect();
        assert!(unexplained.is_empty(), "case {i}: {unexplained:?}");
        ran += 1;
    }
    assert_eq!(ran, 40);
    assert_eq!(backends.len(), 2, "{backends:?}");
}
