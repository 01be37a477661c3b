//! CUDA: ignored by default (they need a GPU); `scripts/gpu-check.sh` runs them with
//! `--ignored cuda`. Each asserts that the GPU path gives what the CPU path gives.

use dtensor::device::{self, Dev};
use harness::generate::{GenCommon, SizeClass};
use harness::oracle::{self, device as cross, Judgement};
use harness::stream::nth;
use harness::{check, run, runner, Options};
use router::generate::RouterGen;
use shardfuzz::replay;

fn cuda() -> tch::Device {
    device::init();
    assert!(
        tch::Cuda::is_available(),
        "no CUDA device: these tests are for a GPU machine (run with --ignored only there)"
    );
    tch::Device::Cuda(0)
}

#[test]
#[ignore]
fn cuda_is_available_after_dlopen() {
    cuda();
    assert!(device::cuda_count() >= 1);
    assert!(!device::gpu_names().is_empty());
}

#[test]
#[ignore]
fn cuda_golden_cases_give_the_cpu_verdicts() {
    let dev = cuda();
    let dir = crate::root().join("tests/golden");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if !p.to_string_lossy().ends_with(".outcome.json") {
            continue;
        }
        let case = replay::parse(&std::fs::read_to_string(&p).unwrap()).unwrap();
        let on_cpu = check(&case, Dev::Cpu, Options::default()).unwrap().outcome();
        let on_gpu = check(&case, Dev::Cuda(0), Options::default()).unwrap().outcome();
        assert_eq!(dev, tch::Device::Cuda(0));
        let classes =
            |o: &harness::outcome::Outcome| o.verdicts.iter().map(|v| (v.class, v.output.clone())).collect::<Vec<_>>();
        assert_eq!(classes(&on_cpu), classes(&on_gpu), "{}", p.display());
        assert_eq!(on_cpu.sharded.error, on_gpu.sharded.error, "{}", p.display());
        n += 1;
    }
    assert!(n >= 10);
}

fn cross_check(size: SizeClass, cases: u64, seed: u64) {
    let dev = cuda();
    let common = GenCommon { size, device: Dev::Cuda(0), ..GenCommon::default() };
    for i in 0..cases {
        let case: crate::RouterCase = nth(seed, i, &common, &RouterGen::default());
        let gpu = runner::run(&case, dev).unwrap();
        let cpu = runner::run(&case, tch::Device::Cpu).unwrap();
        let mut j = Judgement::default();
        cross::check(&case, (&cpu.0, &cpu.1), &gpu.0, &mut j);
        assert!(j.verdicts.is_empty(), "case {i} of seed {seed}: {:#?}\n{}", j.verdicts, case.to_json());
        // The per-device oracles agree too.
        let sig = |(r, x): &(run::Run, router::run::Extra)| {
            oracle::judge(&case, r, x).verdicts.iter().map(|v| v.signature(&case)).collect::<Vec<_>>()
        };
        assert_eq!(sig(&cpu), sig(&gpu), "case {i} of seed {seed}");
    }
}

#[test]
#[ignore]
fn cuda_small_cases_agree_with_cpu() {
    cross_check(SizeClass::Small, 400, 7);
}

#[test]
#[ignore]
fn cuda_large_presets_agree_with_cpu() {
    cross_check(SizeClass::Large, 3, 8);
}
