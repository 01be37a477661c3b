//! report.md's triage: what needs a look first (new findings, each with its mechanism, smallest
//! reproducer, real-PyTorch status, export command and a draft upstream issue), then
//! regressions, then open findings, then known and expected ones collapsed, then fixed ones.

use super::Report;
use crate::triage::{Finding, Status};

impl Report {
    /// The status of each bucket, by its index (from the findings that hold it).
    pub fn bucket_status(findings: &[Finding], buckets: usize) -> Vec<Status> {
        let mut out = vec![Status::New; buckets];
        for f in findings {
            for &i in &f.index {
                out[i] = f.status;
            }
        }
        out
    }

    /// The headline: how many findings need a person.
    pub fn triage_line(findings: &[Finding]) -> String {
        let n = |s: Status| findings.iter().filter(|f| f.status == s).count();
        let (new, back) = (n(Status::New), n(Status::Regression));
        let mut line = match new {
            0 => "No new finding needs a look".to_string(),
            1 => "1 new finding needs a look".to_string(),
            k => format!("{k} new findings need a look"),
        };
        if back > 0 {
            line.push_str(&format!(", and {back} regression(s)"));
        }
        let rest: Vec<String> = [Status::Open, Status::Known, Status::Expected, Status::Fixed]
            .into_iter()
            .filter(|s| n(*s) > 0)
            .map(|s| format!("{} {}", n(s), s.name()))
            .collect();
        if !rest.is_empty() {
            line.push_str(&format!(" ({})", rest.join(", ")));
        }
        line
    }

    /// One finding that needs a look, as a markdown block.
    fn md_finding(&self, f: &Finding) -> String {
        let mut s = format!("### {}: {}\n\n", f.status.name(), f.mechanism);
        s.push_str(&format!("- {} bucket(s), {} case(s)\n", f.buckets.len(), f.cases));
        if let Some(b) = f.smallest_bucket(&self.buckets) {
            let (r, t, _) = b.minimized_size();
            s.push_str(&format!(
                "- smallest reproducer: [{r} rank(s), {t} token(s)]({}) `{}`\n",
                Self::link(b),
                b.signature
            ));
            if self.has_real() {
                s.push_str(&format!("- real PyTorch: {}\n", super::real::cell(b)));
            }
        }
        if let Some(d) = f.draft(&self.buckets) {
            s.push_str(&format!("- export: `{}`\n", d.export));
            if let Some(py) = &d.script {
                s.push_str(&format!("- script: [{py}]({py})\n"));
            }
            s.push_str(&format!(
                "\n<details><summary>Draft upstream issue</summary>\n\n**{}**\n\n{}\n</details>\n",
                d.title, d.body
            ));
        }
        s.push('\n');
        s
    }

    pub(super) fn md_triage(&self, findings: &[Finding]) -> String {
        let mut s = format!("## Triage\n\n**{}.**\n\n", Self::triage_line(findings));
        for status in [Status::New, Status::Regression] {
            for f in findings.iter().filter(|f| f.status == status) {
                s.push_str(&self.md_finding(f));
            }
        }
        let rows = |st: &[Status]| -> Vec<Vec<String>> {
            findings
                .iter()
                .filter(|f| st.contains(&f.status))
                .map(|f| {
                    let why = match f.status {
                        Status::Known if f.link.starts_with("http") => format!("[upstream]({})", f.link),
                        Status::Known => f.link.clone(),
                        Status::Expected => f.reason.clone(),
                        _ => f.smallest.as_deref().map_or("-".into(), |x| format!("`{x}`")),
                    };
                    vec![
                        f.status.name().to_string(),
                        f.mechanism.replace('|', "\\|"),
                        f.buckets.len().to_string(),
                        f.cases.to_string(),
                        why.replace('|', "\\|"),
                    ]
                })
                .collect()
        };
        let head = ["status", "mechanism", "buckets", "cases", "issue, reason or smallest"];
        for (title, st) in [
            ("Open (seen in the baseline, not settled yet)", &[Status::Open][..]),
            ("Known upstream and expected", &[Status::Known, Status::Expected][..]),
            ("Fixed since the baseline", &[Status::Fixed][..]),
        ] {
            let r = rows(st);
            if !r.is_empty() {
                s.push_str(&format!(
                    "<details><summary>{title}: {} finding(s)</summary>\n\n{}\n\n</details>\n\n",
                    r.len(),
                    super::md_table(&head, &r)
                ));
            }
        }
        s
    }
}
