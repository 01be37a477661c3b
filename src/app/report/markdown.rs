//! `report.md`: the triage first (findings.rs), then the summary, the comparison table,
//! the buckets, the near-ties and where the time went, one function per section.

use super::{md_table, Report};
use crate::bucket::Bucket;
use harness::oracle::Class;
use harness::timing::PHASES;

impl Report {
    pub fn markdown(&self) -> String {
        let mut s = String::from("# shardfuzz campaign report\n\n");
        if self.interrupted {
            s.push_str(
                "**Interrupted**: the campaign was stopped early; the counts below cover the cases that finished.\n\n",
            );
        }
        if let Some(c) = &self.shards {
            let list: Vec<String> = c.covered.iter().map(|i| i.to_string()).collect();
            s.push_str(&format!(
                "**Part of a campaign**: shard(s) {} of {} of the case stream; `shardfuzz merge` joins the parts.\n\n",
                list.join(", "),
                c.of
            ));
        }
        let findings = self.triage();
        let sections = [
            self.md_triage(&findings),
            self.md_summary(),
            self.md_comparison(),
            self.md_buckets(&Self::bucket_status(&findings, self.buckets.len())),
            self.md_ties(),
            self.md_grads(),
        ];
        for section in sections {
            s.push_str(&section);
        }
        if let Some(r) = self.md_regression() {
            s.push_str(&r);
        }
        s.push_str(&self.md_time());
        s
    }

    /// The file a bucket links to: its minimized reproducer, else its first case.
    pub(super) fn link(b: &Bucket) -> &str {
        b.repro.as_deref().unwrap_or(&b.first_case)
    }

    fn md_summary(&self) -> String {
        let summary = vec![
            ["cases".to_string(), self.cases.to_string()],
            ["diverging cases".into(), self.diverging_cases.to_string()],
            ["buckets".into(), self.buckets.len().to_string()],
            ["seed".into(), self.seed.to_string()],
            ["case size".into(), self.size.clone()],
            ["devices".into(), self.devices.join(", ")],
            ["libtorch".into(), self.libtorch.clone()],
            ["workers".into(), self.jobs.to_string()],
            ["wall time".into(), format!("{:.1} s (timing)", self.timing.wall_s)],
            ["cases/s".into(), format!("{:.0} (timing)", self.timing.cases_per_s)],
        ];
        format!("## Summary\n\n{}\n\n{}", md_table(&["", "value"], &summary), self.md_fidelity())
    }

    /// The fidelity line and the model bugs, when the campaign confirmed its buckets.
    fn md_fidelity(&self) -> String {
        let Some(f) = self.measure_fidelity() else { return String::new() };
        let mut s = format!("**{}**\n\n", f.line());
        for b in self.model_bugs() {
            s.push_str(&format!(
                "- model bug: `{}`: {}\n",
                b.signature,
                b.real().map(|r| r.cell()).unwrap_or_default().replace('|', "\\|")
            ));
        }
        if f.model_bugs > 0 {
            s.push('\n');
        }
        s
    }

    fn md_comparison(&self) -> String {
        let mut header = vec!["program".to_string(), "rules".into(), "cases".into(), "diverging".into()];
        header.extend(Class::ALL.iter().map(|c| c.name().to_string()));
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| {
                let mut v = vec![
                    format!("`{}`", r.program),
                    format!("`{}`", r.rules),
                    r.cases.to_string(),
                    r.diverging.to_string(),
                ];
                v.extend(Class::ALL.iter().map(|c| match r.classes.get(c) {
                    Some(cell) if cell.cases > 0 => {
                        match cell.smallest.as_ref().and_then(|sig| self.buckets.iter().find(|b| &b.signature == sig)) {
                            Some(b) => format!("{} [min]({})", cell.cases, Self::link(b)),
                            None => cell.cases.to_string(),
                        }
                    }
                    _ => "0".into(),
                }));
                v
            })
            .collect();
        let hdr: Vec<&str> = header.iter().map(String::as_str).collect();
        format!(
            "## Comparison: program x rule set\n\n\
             Diverging cases per verdict class; `[min]` links the smallest reproducer of that class in that row.\n\n\
             {}\n\n",
            md_table(&hdr, &rows)
        )
    }

    /// How many of the subjects' known upstream bugs some bucket is an instance of.
    pub(super) fn known_found(&self) -> usize {
        self.known_bugs.iter().filter(|k| self.buckets.iter().any(|b| b.known.contains(k))).count()
    }

    fn md_buckets(&self, status: &[crate::triage::Status]) -> String {
        let real = self.has_real();
        let rows: Vec<Vec<String>> = self
            .buckets
            .iter()
            .zip(status)
            .map(|(b, st)| {
                let min = match &b.shrink {
                    Some(x) => format!("{}r {}t {}e {}d", x.ranks, x.tokens, x.experts, x.model),
                    None => "-".into(),
                };
                let mut file = match &b.repro {
                    Some(r) => format!("[repro]({r})"),
                    None => format!("[first]({})", b.first_case),
                };
                if let Some(py) = b.script() {
                    file.push_str(&format!(" [.py]({py})"));
                }
                let mut row = vec![
                    format!("`{}`", b.signature),
                    st.name().to_string(),
                    b.count.to_string(),
                    b.first_index.to_string(),
                    min,
                    file,
                ];
                if real {
                    row.push(super::real::cell(b).replace('|', "\\|"));
                }
                row.push(b.explanation.replace('|', "\\|"));
                row
            })
            .collect();
        let mut header = vec!["signature", "status", "cases", "first", "minimized", "file"];
        if real {
            header.push("real PyTorch");
        }
        header.push("what it means");
        format!(
            "## Buckets\n\n\
             One row per signature (`class:output:router:rules:key`). Minimized: ranks/tokens/experts/model dim of the shrunk reproducer.{}\n\n\
             {}\n\n",
            if real { " Real PyTorch: the reproducer run on real DTensor (`shardfuzz confirm`); a bucket it does not confirm is a model bug." } else { "" },
            md_table(&header, &rows)
        )
    }

    fn md_ties(&self) -> String {
        let t = &self.near_ties;
        let row = vec![
            t.tokens.to_string(),
            t.topk_near_ties.to_string(),
            t.group_near_ties.to_string(),
            t.flipped.to_string(),
            t.cases_with_near_ties.to_string(),
            format!("{} ({})", t.unchecked, t.unchecked_share()),
        ];
        format!(
            "## Near-ties\n\n\
             Tokens whose top-k (or group) choice was within the rounding bound of the next candidate are undecided: their ids are not compared with the reference's, but their choice must still be a valid top-k under the bound, with the reference's scores as gate values and routing-map rows of their own ids. Unchecked: undecided tokens where even that cannot be checked.\n\n\
             {}\n\n",
            md_table(
                &["tokens compared", "top-k near-ties", "group near-ties", "flipped (benign)", "cases with near-ties", "unchecked"],
                &[row]
            )
        )
    }

    fn md_grads(&self) -> String {
        let g = &self.grads;
        let row =
            vec![g.cases.to_string(), g.checked.to_string(), g.near_tie.to_string(), g.forward_differs.to_string()];
        format!(
            "## Gradient checks\n\n\
             Backward cases compare their gradients unless the reference's choice is a near-tie or the boundary program \
             chose other experts (then the gradient's support differs: a forward matter).\n\n{}\n\n",
            md_table(&["backward cases", "compared", "skipped: near-tie", "skipped: forward differs"], &[row])
        )
    }

    fn md_regression(&self) -> Option<String> {
        let r = self.regression.as_ref()?;
        let list = |v: &Vec<String>| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.iter().map(|x| format!("- `{x}`")).collect::<Vec<_>>().join("\n")
            }
        };
        Some(format!(
            "## Regression against `{}`\n\n**New** ({}):\n\n{}\n\n**Regressed** ({}):\n\n{}\n\n**Fixed** ({}):\n\n{}\n\n**Still failing** ({}):\n\n{}\n\n",
            r.baseline,
            r.new.len(),
            list(&r.new),
            r.regressed.len(),
            list(&r.regressed),
            r.fixed.len(),
            list(&r.fixed),
            r.still_failing.len(),
            list(&r.still_failing)
        ))
    }

    fn md_time(&self) -> String {
        let p = &self.timing.phases_us;
        let total = p.total_us().max(1) as f64;
        let mut header: Vec<&str> = PHASES.iter().map(|(n, _)| *n).collect();
        header.push("shrinking");
        let mut row: Vec<String> = PHASES.iter().map(|(_, f)| format!("{:.0}%", 100.0 * f(p) as f64 / total)).collect();
        row.push(format!("{:.1} s", self.timing.shrink_s));
        let mut parts = String::new();
        for p in &self.timing.parts {
            parts.push_str(&format!(
                "- shard {}: {} cases in {:.1} s ({:.0}/s) (timing)\n",
                p.shards, p.cases, p.wall_s, p.cases_per_s
            ));
        }
        if !parts.is_empty() {
            parts = format!(
                "Merged from {} part(s), each timed on its own (whether they ran side by side or one after another is not \
                 recorded: the wall time above is the longest part's, the workers are the parts' summed):\n\n{parts}\n",
                self.timing.parts.len()
            );
        }
        format!("## Where the time went (timing)\n\n{}\n\n{parts}", md_table(&header, &[row]))
    }
}
