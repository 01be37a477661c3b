//! The bench's result as data (`bench.json`, format `shardfuzz.bench/1`) and as `bench.md`.

use super::{DetectRow, ShrinkTiming, Throughput};
use crate::report::md_table;
use harness::timing::PHASES;
use serde::Serialize;

#[derive(Serialize)]
pub struct Bench {
    pub format: &'static str,
    pub machine: Machine,
    pub throughput: Vec<Throughput>,
    pub detect: Vec<DetectRow>,
    pub shrink: Vec<ShrinkTiming>,
}

#[derive(Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub gpus: Vec<String>,
    pub libtorch: String,
    pub intra_op_threads: i32,
}

impl Bench {
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let gpus = if m.gpus.is_empty() { "none".into() } else { m.gpus.join(", ") };
        format!(
            "# shardfuzz bench\n\n\
             Machine: {} ({} cores), GPUs: {gpus}, libtorch {}, {} intra-op thread(s): every figure is for one core.\n\n{}{}{}{}{}",
            m.cpu,
            m.cores,
            m.libtorch,
            m.intra_op_threads,
            self.md_throughput(),
            self.md_oracles(),
            self.md_backward(),
            self.md_detect(),
            self.md_shrink()
        )
    }

    fn md_throughput(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .throughput
            .iter()
            .map(|t| {
                let mean = |us: u64| format!("{:.0}", us as f64 / t.cases.max(1) as f64);
                let mut row = vec![t.subject.clone(), t.device.clone(), t.size.clone(), t.backward.clone()];
                row.push(format!("{} x {}", t.cases, t.runs));
                row.push(format!("{:.0}", t.cases_per_s));
                row.extend(PHASES.iter().map(|(_, f)| mean(f(&t.phases_us))));
                row.extend([mean(t.io_us), format!("{:.0}", t.floor_us), format!("{:.1}x", t.over_floor)]);
                row
            })
            .collect();
        let mut header = vec!["subject", "device", "size", "backward", "cases x runs", "cases/s"];
        header.extend(PHASES.iter().map(|(n, _)| *n));
        header.extend(["I/O", "floor", "time/floor"]);
        format!(
            "## Cases per second and where a case's time goes (mean µs per case)\n\n\
             Each row is the median of `runs` runs of the same cases, taken in rounds that run every row once (a \
             slower stretch of a shared machine then falls on every row alike). floor = 2 x reference: libtorch computing the \
             subject's program once unsharded and once for the sharded side.\n\n{}\n\n",
            md_table(&header, &rows)
        )
    }

    /// Mean µs per case of each oracle (rows) in each throughput measurement (columns).
    fn md_oracles(&self) -> String {
        let mut names: Vec<&str> = Vec::new();
        for t in &self.throughput {
            for (n, _) in &t.oracles_us {
                if !names.contains(&n.as_str()) {
                    names.push(n);
                }
            }
        }
        if names.is_empty() {
            return String::new();
        }
        // Each oracle, then its parts (a part finishes, and is first seen, before its oracle).
        let top: Vec<&str> = names.iter().copied().filter(|n| !n.contains(": ")).collect();
        let mut ordered: Vec<&str> = Vec::new();
        for t in &top {
            ordered.push(t);
            ordered.extend(names.iter().copied().filter(|n| n.split_once(": ").is_some_and(|(o, _)| o == *t)));
        }
        let rest: Vec<&str> = names.iter().copied().filter(|n| !ordered.contains(n)).collect();
        ordered.extend(rest);
        let names = ordered;
        let cols: Vec<String> =
            self.throughput.iter().map(|t| format!("{} {} {} {}", t.subject, t.device, t.size, t.backward)).collect();
        let rows: Vec<Vec<String>> = names
            .iter()
            .map(|name| {
                let mut row = vec![name.to_string()];
                row.extend(self.throughput.iter().map(|t| {
                    let us = t.oracles_us.iter().find(|(n, _)| n == name).map_or(0, |x| x.1);
                    format!("{:.1}", us as f64 / t.cases.max(1) as f64)
                }));
                row
            })
            .collect();
        let mut header = vec!["oracle (mean µs per case)"];
        header.extend(cols.iter().map(String::as_str));
        format!(
            "## What each oracle costs\n\nThe oracles phase above, oracle by oracle (same runs; `oracle: part` rows \
             are parts of the row above them and are included in it). The value oracle is the subject's own \
             comparison; `subject's own` holds the router's gradient checks.\n\n{}\n\n",
            md_table(&header, &rows)
        )
    }

    /// Per device and size: a backward case's time over a forward case's (the same generator
    /// with `--backward only` and `off`).
    fn md_backward(&self) -> String {
        let per_case = |t: &super::Throughput| 1e6 / t.cases_per_s.max(1e-9);
        let rows: Vec<Vec<String>> = self
            .throughput
            .iter()
            .filter(|t| t.backward == "off")
            .filter_map(|f| {
                let b = self.throughput.iter().find(|b| {
                    b.backward == "only" && b.subject == f.subject && b.device == f.device && b.size == f.size
                })?;
                Some(vec![
                    f.subject.clone(),
                    f.device.clone(),
                    f.size.clone(),
                    format!("{:.0}", per_case(f)),
                    format!("{:.0}", per_case(b)),
                    format!("{:.0}", b.phases_us.backward_us as f64 / b.cases.max(1) as f64),
                    format!("{:.2}x", per_case(b) / per_case(f)),
                ])
            })
            .collect();
        if rows.is_empty() {
            return String::new();
        }
        let header =
            ["subject", "device", "size", "forward case µs", "backward case µs", "of which backward µs", "cost"];
        format!(
            "## The backward pass's cost\n\nA router backward case runs the forward router, a boundary revision's \
             forward and backward on the simulated DTensor, and the float64 reference gradients; a MoE-layer backward \
             case the layer's backward on both sides.\n\n{}\n\n{}",
            md_table(&header, &rows),
            self.md_moe_cost()
        )
    }

    /// Per device and size: a MoE-layer case's time over a router backward case's.
    fn md_moe_cost(&self) -> String {
        let per_case = |t: &super::Throughput| 1e6 / t.cases_per_s.max(1e-9);
        let find = |subject: &str, t: &super::Throughput| {
            self.throughput
                .iter()
                .find(|r| r.subject == subject && r.backward == "only" && r.device == t.device && r.size == t.size)
        };
        let rows: Vec<Vec<String>> = self
            .throughput
            .iter()
            .filter(|t| t.subject == "moe" && t.backward == "only")
            .filter_map(|m| {
                let r = find("router", m)?;
                let (m_us, r_us) = (per_case(m), per_case(r));
                let cost = format!("{:.2}x", m_us / r_us);
                Some(vec![m.device.clone(), m.size.clone(), format!("{r_us:.0}"), format!("{m_us:.0}"), cost])
            })
            .collect();
        if rows.is_empty() {
            return String::new();
        }
        let header = ["device", "size", "router backward case µs", "MoE backward case µs", "MoE / router"];
        format!("A MoE-layer backward case against a router backward case:\n\n{}\n\n", md_table(&header, &rows))
    }

    fn md_detect(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .detect
            .iter()
            .map(|d| {
                let per: Vec<String> =
                    d.per_seed.iter().map(|f| f.map_or("-".into(), |(t, n)| format!("{t:.3}s/{n}"))).collect();
                let median = d.median_s.map_or("not found".into(), |m| format!("{m:.3} s"));
                vec![d.device.clone(), d.bug.clone(), median, per.join(" ")]
            })
            .collect();
        format!(
            "## Time to detect each known bug (default generator, in-process, one core)\n\n{}\n\n",
            md_table(&["device", "bug", "median", "per seed (time/cases)"], &rows)
        )
    }

    fn md_shrink(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .shrink
            .iter()
            .map(|x| {
                vec![
                    x.bug.clone(),
                    format!("{:.0} ms", x.ms),
                    x.tried.to_string(),
                    x.kept.to_string(),
                    format!("{} -> {}", x.ranks_before, x.ranks_after),
                    x.tokens_after.to_string(),
                ]
            })
            .collect();
        format!(
            "## Shrink time per bug (first instance of the first seed that found it)\n\n{}\n",
            md_table(&["bug", "shrink time", "tried", "kept", "ranks", "tokens after"], &rows)
        )
    }
}
