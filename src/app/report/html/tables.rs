//! The page's tables: the same content as report.md, one function per section.

use super::{code, esc, heat, ink, link, num, pct, section, table, text};
use crate::bucket::Bucket;
use crate::report::Report;
use harness::oracle::Class;
use harness::timing::PHASES;
use std::collections::HashMap;

/// Bucket rows shown before "show all".
const PAGE: usize = 300;

impl Report {
    pub(super) fn html_summary(&self) -> String {
        let known = self.known_found();
        let head = [
            ("cases", "n"),
            ("diverging cases", "n"),
            ("buckets", "n"),
            ("known bugs found", "n"),
            ("seed", "n"),
            ("case size", ""),
            ("devices", ""),
            ("libtorch", ""),
            ("workers", "n"),
            ("wall time (timing)", "n"),
            ("cases/s (timing)", "n"),
        ];
        let cells = [
            num(self.cases),
            format!(
                "<td class=\"n\" data-v=\"{0}\">{0} <small>({1})</small></td>",
                self.diverging_cases,
                pct(self.diverging_cases, self.cases)
            ),
            num(self.buckets.len()),
            format!("<td class=\"n\" data-v=\"{known}\">{known} of {}</td>", self.known_bugs.len()),
            num(self.seed),
            text(&self.size),
            text(&self.devices.join(", ")),
            text(&self.libtorch),
            num(self.jobs),
            format!("<td class=\"n\" data-v=\"{0:.1}\">{0:.1} s</td>", self.timing.wall_s),
            format!("<td class=\"n\" data-v=\"{0:.0}\">{0:.0}</td>", self.timing.cases_per_s),
        ];
        let body = format!("<tr>{}</tr>\n", cells.concat());
        let table = table("summary-table", "summary", &head, &body);
        section("summary", "Summary", "", &(table + &self.html_fidelity()))
    }

    /// The fidelity line and the model bugs, when the campaign confirmed its buckets.
    fn html_fidelity(&self) -> String {
        let Some(f) = self.measure_fidelity() else { return String::new() };
        let mut s = format!("<p id=\"fidelity\"><strong>{}</strong></p>\n", esc(&f.line()));
        let bugs: Vec<String> = self
            .model_bugs()
            .iter()
            .map(|b| {
                format!(
                    "<li>model bug: <code>{}</code>: {}</li>",
                    esc(&b.signature.to_string()),
                    esc(&b.real().map(|r| r.cell()).unwrap_or_default())
                )
            })
            .collect();
        if !bugs.is_empty() {
            s.push_str(&format!("<ul id=\"model-bugs\">{}</ul>\n", bugs.concat()));
        }
        s
    }

    pub(super) fn html_comparison(&self) -> String {
        let index: HashMap<String, &Bucket> = self.buckets.iter().map(|b| (b.signature.to_string(), b)).collect();
        let classes: Vec<Class> = Class::ALL
            .iter()
            .copied()
            .filter(|c| self.rows.iter().any(|r| r.classes.get(c).is_some_and(|x| x.cases > 0)))
            .collect();
        let names: Vec<String> = classes.iter().map(|c| c.name().replace('_', " ")).collect();
        let mut head: Vec<(&str, &str)> =
            vec![("program", ""), ("kind", ""), ("rules", ""), ("cases", "n"), ("diverging", "n")];
        head.extend(names.iter().map(|n| (n.as_str(), "n")));
        let mut body = String::new();
        for r in &self.rows {
            body.push_str(&format!(
                "<tr>{}{}{}{}<td class=\"n\" data-v=\"{}\">{} <small>({})</small></td>",
                code(&r.program),
                text(&r.kind),
                code(r.rules.name()),
                num(r.cases),
                r.diverging,
                r.diverging,
                pct(r.diverging, r.cases)
            ));
            for c in &classes {
                let cell = r.classes.get(c).filter(|x| x.cases > 0);
                body.push_str(&match cell {
                    None => "<td class=\"n zero\" data-v=\"0\">0</td>".into(),
                    Some(x) => {
                        let rate = x.cases as f64 / r.cases.max(1) as f64;
                        let min = x
                            .smallest
                            .as_ref()
                            .and_then(|s| index.get(&s.to_string()))
                            .map(|b| format!(" {}", link(Self::link(b), "min")))
                            .unwrap_or_default();
                        format!(
                            "<td class=\"n\" data-v=\"{}\" style=\"background:{};color:{}\">{}{min}</td>",
                            x.cases,
                            heat(rate),
                            ink(rate),
                            x.cases
                        )
                    }
                });
            }
            body.push_str("</tr>\n");
        }
        let omitted: Vec<&str> = Class::ALL.iter().filter(|c| !classes.contains(c)).map(|c| c.name()).collect();
        let note = if omitted.is_empty() {
            String::new()
        } else {
            format!("<p class=\"note\">No divergence in any row of class: {}.</p>\n", omitted.join(", "))
        };
        section(
            "comparison",
            "Comparison: program x rule set",
            "One row per router revision (forward verdicts) or boundary revision (backward verdicts) x rule set; \
             diverging cases per verdict class, shaded by their share of the row's cases; <i>min</i> links the \
             smallest reproducer of that class in that row.",
            &(table("comparison-table", "compact", &head, &body) + &note),
        )
    }

    pub(super) fn html_buckets(&self, status: &[crate::triage::Status]) -> String {
        let real = self.has_real();
        let mut body = String::with_capacity(self.buckets.len() * 700);
        for (i, b) in self.buckets.iter().enumerate() {
            let st = status[i].name();
            let (min, key) = match &b.shrink {
                Some(x) => (
                    format!("{}r {}t {}e {}d", x.ranks, x.tokens, x.experts, x.model),
                    (x.ranks as f64) * 1e12 + (x.tokens as f64) * 1e6 + (x.experts * x.model).min(999_999) as f64,
                ),
                None => ("-".into(), f64::MAX),
            };
            let mut file = match &b.repro {
                Some(r) => link(r, "repro"),
                None => link(&b.first_case, "first"),
            };
            if let Some(py) = b.script() {
                file = format!("{file} {}", link(py, ".py"));
            }
            let real_cell = if real { text(&crate::report::real::cell(b)) } else { String::new() };
            let known = if b.known.is_empty() {
                String::new()
            } else {
                format!(" <span class=\"tag\">{}</span>", esc(&b.known.join("; ")))
            };
            // Rows past the first page wait hidden (a hidden row costs no layout), so the page
            // opens fast with thousands of buckets; the script pages, sorts and filters them.
            let hidden = if i >= PAGE { " hidden" } else { "" };
            body.push_str(&format!(
                "<tr id=\"b-{i}\" data-i=\"{i}\" data-status=\"{st}\" class=\"bucket\"{hidden}><td class=\"sig\"><code>{}</code></td>{}<td data-v=\"{}\"><span class=\"st st-{st}\">{st}</span></td><td><code>{}</code> <small>{}</small></td>{}{}{}<td class=\"n\" data-v=\"{key:e}\">{min}</td><td>{file}</td>{real_cell}<td class=\"what\">{}{known}</td></tr>\n",
                esc(&b.signature.to_string()),
                text(b.class.name()),
                status[i] as u8,
                esc(&b.signature.program),
                self.kind_of(&b.signature.program),
                code(b.signature.rules.name()),
                num(b.count),
                num(b.first_index),
                esc(&b.explanation),
            ));
        }
        let mut head = vec![
            ("signature", "sig"),
            ("class", "cls"),
            ("status", "st"),
            ("program", "prog"),
            ("rules", "rules"),
            ("cases", "n cnt"),
            ("first", "n cnt"),
            ("minimized", "n min"),
            ("file", "file"),
        ];
        if real {
            head.push(("real PyTorch", "real"));
        }
        head.push(("what it means", "what"));
        let shown = self.buckets.len().min(PAGE);
        let filter = format!(
            "<p class=\"tools\"><input id=\"bucket-filter\" type=\"search\" placeholder=\"filter buckets (signature, class, program, text)\" size=\"48\"> \
             <select id=\"status-filter\" title=\"show the buckets of one status\"><option value=\"\">every status</option>{}</select> \
             <span id=\"bucket-count\">{} bucket(s){}</span> &middot; click a row for its detail</p>\n",
            crate::triage::Status::ALL
                .iter()
                .map(|s| format!("<option value=\"{0}\">{0}</option>", s.name()))
                .collect::<String>(),
            self.buckets.len(),
            if shown < self.buckets.len() { format!(", the first {shown} shown") } else { String::new() }
        );
        let more = format!(
            "<p class=\"tools\"><button id=\"bucket-more\" type=\"button\"{}>show all</button></p>\n\
             <noscript><style>#bucket-table tr[hidden]{{display:table-row}}</style></noscript>\n",
            if shown < self.buckets.len() { "" } else { " hidden" }
        );
        section(
            "buckets",
            "Buckets",
            "One row per signature (<code>class:output:program:rules:key</code>; the program is the router revision, or \
             the boundary revision for gradient verdicts). Minimized: ranks/tokens/experts/model dim of the shrunk reproducer.",
            &(filter + &table("bucket-table", "buckets", &head, &body).replace("<table ", &format!("<table data-page=\"{PAGE}\" ")) + &more),
        )
    }

    pub(super) fn html_regression(&self) -> String {
        let Some(r) = &self.regression else { return String::new() };
        let index: HashMap<String, usize> =
            self.buckets.iter().enumerate().map(|(i, b)| (b.signature.to_string(), i)).collect();
        // New and still-failing buckets open their detail here; fixed ones are only in the baseline.
        let item = |x: &String| match index.get(x) {
            Some(i) => format!("<li><a href=\"#b-{i}\"><code>{}</code></a></li>", esc(x)),
            None => format!("<li><code>{}</code></li>", esc(x)),
        };
        let list = |title: &str, v: &Vec<String>, open: bool| {
            let items: String = v.iter().map(item).collect();
            let body =
                if v.is_empty() { "<p class=\"muted\">none</p>".to_string() } else { format!("<ul>{items}</ul>") };
            format!(
                "<details{}><summary>{title} ({})</summary>{body}</details>\n",
                if open { " open" } else { "" },
                v.len()
            )
        };
        let body = format!(
            "{}{}{}{}",
            self.history_chart(),
            list("New", &r.new, true) + &list("Regressed (fixed in an earlier night, back now)", &r.regressed, true),
            list("Fixed", &r.fixed, true),
            list("Still failing", &r.still_failing, false)
        );
        section("regression", &format!("Regression against <code>{}</code>", esc(&r.baseline)), "", &body)
    }

    pub(super) fn html_ties_and_grads(&self) -> String {
        let t = &self.near_ties;
        let ties = format!(
            "<tr>{}{}{}{}{}<td class=\"n\" data-v=\"{u}\">{u} ({})</td></tr>\n",
            num(t.tokens),
            num(t.topk_near_ties),
            num(t.group_near_ties),
            num(t.flipped),
            num(t.cases_with_near_ties),
            t.unchecked_share(),
            u = t.unchecked,
        );
        let th = [
            ("tokens compared", "n"),
            ("top-k near-ties", "n"),
            ("group near-ties", "n"),
            ("flipped (benign)", "n"),
            ("cases with near-ties", "n"),
            ("unchecked", "n"),
        ];
        let g = &self.grads;
        let grads =
            format!("<tr>{}{}{}{}</tr>\n", num(g.cases), num(g.checked), num(g.near_tie), num(g.forward_differs));
        let gh =
            [("backward cases", "n"), ("compared", "n"), ("skipped: near-tie", "n"), ("skipped: forward differs", "n")];
        let body = format!(
            "<p class=\"intro\">Tokens whose top-k (or group) choice was within the rounding bound of the next candidate are undecided: their ids are not compared with the reference's, but their choice must still be a valid top-k under the bound, with the reference's scores as gate values and routing-map rows of their own ids. Unchecked: undecided tokens where even that cannot be checked.</p>\n{}\
             <h3>Gradient checks</h3>\n<p class=\"intro\">Backward cases compare their gradients unless the reference's choice is a near-tie or the boundary program chose other experts (then the gradient's support differs: a forward matter).</p>\n{}",
            table("ties-table", "", &th, &ties),
            table("grads-table", "", &gh, &grads)
        );
        section("ties", "Near-ties", "", &body)
    }

    pub(super) fn html_grid(&self) -> String {
        let mut body = String::with_capacity(self.grid.len() * 160);
        for g in &self.grid {
            let rate = g.diverging as f64 / g.cases.max(1) as f64;
            body.push_str(&format!(
                "<tr>{}{}<td>{}</td>{}{}<td class=\"n\" data-v=\"{rate:.4}\" style=\"background:{}\">{}</td></tr>\n",
                code(&g.mesh),
                code(&g.layout),
                esc(&super::family(&g.layout)),
                num(g.cases),
                num(g.diverging),
                heat(rate),
                pct(g.diverging, g.cases)
            ));
        }
        let head = [("mesh", ""), ("x layout", ""), ("family", ""), ("cases", "n"), ("diverging", "n"), ("rate", "n")];
        let body = format!(
            "<details><summary>All {} mesh shape x layout cells</summary>\n{}</details>\n",
            self.grid.len(),
            table("grid-table", "compact", &head, &body)
        );
        section("grid", "Mesh shape x token layout", "Every cell of the chart above, one row per x layout.", &body)
    }

    pub(super) fn html_time(&self) -> String {
        let p = &self.timing.phases_us;
        let total = p.total_us().max(1) as f64;
        let mut head: Vec<(&str, &str)> = PHASES.iter().map(|(n, _)| (*n, "n")).collect();
        head.push(("shrinking", "n"));
        let mut row: String = PHASES
            .iter()
            .map(|(_, f)| {
                let v = 100.0 * f(p) as f64 / total;
                format!("<td class=\"n\" data-v=\"{v:.1}\">{v:.0}%</td>")
            })
            .collect();
        row.push_str(&format!("<td class=\"n\" data-v=\"{0:.1}\">{0:.1} s</td>", self.timing.shrink_s));
        let mut body = table("time-table", "", &head, &format!("<tr>{row}</tr>\n"));
        if !self.timing.parts.is_empty() {
            let rows: String = self
                .timing
                .parts
                .iter()
                .map(|x| {
                    format!(
                        "<tr>{}{}<td class=\"n\" data-v=\"{w:.1}\">{w:.1} s</td>{}</tr>\n",
                        code(&x.shards),
                        num(x.cases),
                        num(format!("{:.0}", x.cases_per_s)),
                        w = x.wall_s,
                    )
                })
                .collect();
            let head = [("shards", ""), ("cases", "n"), ("wall time", "n"), ("cases/s", "n")];
            body.push_str(&format!(
                "<h3>Merged from {} part(s), each timed on its own</h3>\n<p>Whether they ran side by side or one after \
                 another is not recorded: the wall time above is the longest part's, the workers are the parts' \
                 summed.</p>\n{}",
                self.timing.parts.len(),
                table("parts-table", "", &head, &rows)
            ));
        }
        section(
            "time",
            "Where the time went (timing)",
            "Share of the summed case time per phase; everything here depends on the machine.",
            &body,
        )
    }
}
