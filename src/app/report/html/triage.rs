//! The page's first section: the triage. New findings first (each with its mechanism, smallest
//! reproducer, real-PyTorch status, export command and a draft upstream issue), then
//! regressions, then open, known, expected and fixed findings collapsed.

use super::{esc, link, section};
use crate::report::Report;
use crate::triage::{Finding, Status};

impl Report {
    /// One finding that needs a look: a line that names it, a line of what to do with it.
    fn html_finding(&self, i: usize, f: &Finding) -> String {
        let st = f.status.name();
        let mut meta = format!("{} bucket(s), {} case(s)", f.buckets.len(), f.cases);
        let mut act = String::new();
        if let Some(b) = f.smallest_bucket(&self.buckets) {
            let (r, t, _) = b.minimized_size();
            let real = crate::report::real::cell(b);
            if self.has_real() {
                meta.push_str(&format!(" &middot; real PyTorch: <b>{}</b>", esc(&real)));
            }
            act.push_str(&format!(
                "smallest: {} <code class=\"sig\">{}</code>",
                link(Self::link(b), &format!("{r} rank(s), {t} token(s)")),
                esc(&b.signature.to_string())
            ));
            if let Some(bi) = f.index.iter().find(|&&j| self.buckets[j].signature == b.signature) {
                act.push_str(&format!(" &middot; <a href=\"#b-{bi}\">detail</a>"));
            }
        }
        let draft = f.draft(&self.buckets).map_or(String::new(), |d| {
            let script = d.script.as_deref().map_or(String::new(), |py| format!(" &middot; {}", link(py, "script")));
            format!(
                "<div class=\"act\">export: <code>{}</code>{script}</div>\n<details class=\"draft\"><summary>Draft upstream issue</summary>\
                 <p><b>{}</b></p><pre>{}</pre></details>\n",
                esc(&d.export),
                esc(&d.title),
                esc(&d.body)
            )
        });
        format!(
            "<li id=\"f-{i}\" class=\"finding\"><div class=\"line\"><span class=\"st st-{st}\">{st}</span> <b>{}</b> <span class=\"meta\">{meta}</span></div>\n\
             <div class=\"act\">{act}</div>\n{draft}</li>\n",
            esc(&f.mechanism)
        )
    }

    /// The settled findings (open, known, expected, fixed) as one table row each.
    fn html_settled_rows(findings: &[Finding], statuses: &[Status]) -> (usize, String) {
        let mut n = 0;
        let mut body = String::new();
        for f in findings.iter().filter(|f| statuses.contains(&f.status)) {
            n += 1;
            let why = match f.status {
                Status::Known if f.link.starts_with("http") => format!("<a href=\"{0}\">{0}</a>", esc(&f.link)),
                Status::Known => esc(&f.link),
                Status::Expected => esc(&f.reason),
                _ => f.smallest.as_deref().map_or("-".into(), |s| format!("<code>{}</code>", esc(s))),
            };
            let st = f.status.name();
            body.push_str(&format!(
                "<tr><td><span class=\"st st-{st}\">{st}</span></td><td>{}</td><td class=\"n\" data-v=\"{}\">{}</td><td class=\"n\" data-v=\"{}\">{}</td><td>{why}</td></tr>\n",
                esc(&f.mechanism),
                f.buckets.len(),
                f.buckets.len(),
                f.cases,
                f.cases
            ));
        }
        (n, body)
    }

    pub(super) fn html_triage(&self, findings: &[Finding]) -> String {
        let mut s = String::new();
        for (status, title) in [(Status::New, ""), (Status::Regression, "Regressions")] {
            let items: String = findings
                .iter()
                .enumerate()
                .filter(|(_, f)| f.status == status)
                .map(|(i, f)| self.html_finding(i, f))
                .collect();
            if !items.is_empty() {
                if !title.is_empty() {
                    s.push_str(&format!("<h3>{title}</h3>\n"));
                }
                s.push_str(&format!("<ol class=\"findings\">\n{items}</ol>\n"));
            }
        }
        let head = [
            ("status", ""),
            ("mechanism", "what"),
            ("buckets", "n"),
            ("cases", "n"),
            ("issue, reason or smallest", "what"),
        ];
        for (id, title, st) in [
            ("open", "Open: seen in the baseline, not settled yet", &[Status::Open][..]),
            ("settled", "Known upstream and expected", &[Status::Known, Status::Expected][..]),
            ("fixed", "Fixed since the baseline", &[Status::Fixed][..]),
        ] {
            let (n, body) = Self::html_settled_rows(findings, st);
            if n > 0 {
                s.push_str(&format!(
                    "<details class=\"settled\"><summary>{title}: {n} finding(s)</summary>\n{}</details>\n",
                    super::table(&format!("{id}-table"), "findings-table", &head, &body)
                ));
            }
        }
        let legend: String = Status::ALL
            .iter()
            .map(|st| format!("<li><span class=\"st st-{0}\">{0}</span> {1}</li>", st.name(), esc(st.meaning())))
            .collect();
        s.push_str(&format!(
            "<details class=\"legend-st\"><summary>What the statuses mean</summary><ul>{legend}</ul></details>\n"
        ));
        section("triage", &esc(&Self::triage_line(findings)), "", &s)
    }
}
