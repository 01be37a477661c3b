use super::*;

fn bucket(sig: &str, explanation: &str, known: &[&str]) -> Bucket {
    let signature: harness::Signature = sig.parse().unwrap();
    Bucket {
        class: signature.class,
        signature,
        count: 3,
        first_index: 1,
        smallest_index: 1,
        smallest_size: (2, 4, 8, 1),
        detail: "it differs".into(),
        explanation: explanation.into(),
        first_case: "cases/x.json".into(),
        repro: Some("repro/x.json".into()),
        shrink: None,
        known: known.iter().map(|s| s.to_string()).collect(),
        extra: Default::default(),
    }
}

fn status_of<'a>(f: &'a [Finding], sig: &str) -> &'a Finding {
    f.iter().find(|x| x.buckets.iter().any(|s| s == sig)).unwrap_or_else(|| panic!("no finding holds {sig}"))
}

const NEW: &str = "grad:x:tt-2416:torch-2.13:reduced_twice@gate.to_local>gate.from_local";
const KNOWN: &str = "placement:counts:inplace_scatter:torch-2.13:P(sum)->R@1";
const EXPECTED: &str = "error:-:tt-2416:torch-2.13:ValueError:uneven_split_of_tokens_of";
const OPEN: &str = "error:-:tt-clean:torch-2.12:RuntimeError:view_size_is_not_compatible";
const BACK: &str = "value:offsets:inplace_scatter:torch-2.13:inconsistent";

fn campaign() -> Vec<Bucket> {
    vec![
        bucket(
            NEW,
            "a gradient reduced once too often",
            &["router's dx reduced twice at the MoE input (tt-2416; new)"],
        ),
        bucket(KNOWN, "counts Replicate on a size-1 axis", &["size1=keep contract mismatch (#3762)"]),
        bucket(
            KNOWN.replace("2.13", "2.14").as_str(),
            "counts Replicate on a size-1 axis",
            &["size1=keep contract mismatch (#3762)"],
        ),
        bucket(
            EXPECTED,
            "only one side raised",
            &["token split refuses T not divisible by TP (torchtitan ValueError)"],
        ),
        bucket(OPEN, "only one side raised: only the tt-clean program raised: view", &[]),
        bucket(
            &OPEN.replace("tt-clean", "tt-3192"),
            "only one side raised: only the tt-3192 program raised: view",
            &[],
        ),
        bucket(BACK, "sharded offsets differ", &[]),
    ]
}

#[test]
fn every_status_is_given_and_mechanisms_group_buckets() {
    let buckets = campaign();
    let (still, back, gone) = (
        vec![OPEN.to_string()],
        vec![BACK.to_string()],
        vec![
            "comm:group_mask:gone:torch-2.13:all_gather".to_string(),
            "error:-:x:torch-2.13:RuntimeError:mixed_tensor@aten.gather.default".to_string(),
        ],
    );
    let f = findings(&buckets, Some(Baseline { still_failing: &still, regressed: &back, fixed: &gone }));
    assert_eq!(status_of(&f, NEW).status, Status::New);
    let known = status_of(&f, KNOWN);
    assert_eq!((known.status, known.buckets.len(), known.cases), (Status::Known, 2, 6));
    assert!(known.link.ends_with("/3762"), "{}", known.link);
    let expected = status_of(&f, EXPECTED);
    assert_eq!(expected.status, Status::Expected);
    assert!(!expected.reason.is_empty());
    // One mechanism on two programs is one finding, open because the baseline had one of them.
    let open = status_of(&f, OPEN);
    assert_eq!((open.status, open.buckets.len()), (Status::Open, 2));
    assert_eq!(status_of(&f, BACK).status, Status::Regression);
    let fixed = status_of(&f, "comm:group_mask:gone:torch-2.13:all_gather");
    assert_eq!(fixed.status, Status::Fixed);
    // A fixed signature the table knows keeps the table's mechanism line.
    assert!(status_of(&f, "error:-:x:torch-2.13:RuntimeError:mixed_tensor@aten.gather.default").reason.len() > 5);
    // New first, then regressions, then the rest in status order.
    let order: Vec<Status> = f.iter().map(|x| x.status).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);
    assert_eq!(order[0], Status::New);
}

#[test]
fn without_a_baseline_unsettled_buckets_are_new() {
    let f = findings(&campaign(), None);
    assert_eq!(status_of(&f, OPEN).status, Status::New);
    assert_eq!(status_of(&f, BACK).status, Status::New);
    assert!(f.iter().all(|x| x.status != Status::Fixed));
}

#[test]
fn fail_on_parses_lists_and_defaults_to_new_and_regressed() {
    assert_eq!(FailOn::default(), "new,regressed".parse().unwrap());
    let any: FailOn = "any".parse().unwrap();
    assert!(any.fails(Status::Expected) && !any.fails(Status::Fixed));
    assert!(!"none".parse::<FailOn>().unwrap().fails(Status::New));
    assert!("bogus".parse::<FailOn>().is_err());
}

#[test]
fn a_draft_names_the_mechanism_and_the_script() {
    let mut buckets = campaign();
    buckets[0].extra.insert(crate::bucket::SCRIPT_FIELD.into(), "repro/x.py".into());
    let f = findings(&buckets, None);
    let new = status_of(&f, NEW);
    let d = new.draft(&buckets).unwrap();
    assert!(d.title.starts_with("router's dx reduced twice"), "{}", d.title);
    assert!(d.body.contains("torchrun --nproc-per-node 2 repro/x.py"), "{}", d.body);
    assert_eq!(d.script.as_deref(), Some("repro/x.py"));
    assert!(d.export.starts_with("shardfuzz export repro/x.json --pytorch "), "{}", d.export);
}
