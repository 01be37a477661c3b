//! `report.html`: one self-contained page (nothing fetched at view time). The triage first (what
//! needs a look), then the tables of report.md
//! as HTML tables, sortable by any column; charts sized for a 1280-pixel screen (inline SVG);
//! each bucket's detail (error text, minimized dims, the case itself) one click away. Rendered
//! from the report and the case files it links, so the same data gives the same bytes.
//!
//! With thousands of buckets the page stays fast: the tables are static markup with fixed
//! column widths (one layout pass), and the per-bucket details travel as one JSON block that is
//! parsed on the first click only.

mod assets;
mod charts;
mod detail;
mod tables;
mod triage;

use super::{xml as esc, Report};
use std::path::Path;

impl Report {
    /// The page; links and case files are relative to the campaign directory `dir`.
    pub fn html(&self, dir: &Path) -> String {
        let mut s = String::with_capacity(64 * 1024 + self.buckets.len() * 2048);
        s.push_str("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n");
        s.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
        s.push_str(&format!("<title>shardfuzz report: {} cases, {} buckets</title>\n", self.cases, self.buckets.len()));
        s.push_str(&format!("<style>{}</style>\n</head><body>\n", assets::CSS));
        s.push_str(&self.html_header());
        // The triage leads: what needs a person comes first, the numbers and charts after it.
        let findings = self.triage();
        let sections = [
            self.html_triage(&findings),
            self.html_summary(),
            self.html_comparison(),
            self.html_buckets(&Report::bucket_status(&findings, self.buckets.len())),
            self.html_charts(),
            self.html_regression(),
            self.html_ties_and_grads(),
            self.html_grid(),
            self.html_time(),
        ];
        for sec in sections {
            s.push_str(&sec);
        }
        s.push_str(&detail::data(self, dir));
        s.push_str(assets::PANEL);
        s.push_str(&format!("<script>{}</script>\n</body></html>\n", assets::JS));
        s
    }

    fn html_header(&self) -> String {
        let mut s = String::from("<header><h1>shardfuzz campaign report</h1>\n");
        s.push_str(&format!(
            "<p class=\"sub\">{} cases, {} diverging, {} buckets &middot; seed {} &middot; {} cases &middot; {}</p>\n",
            self.cases,
            self.diverging_cases,
            self.buckets.len(),
            self.seed,
            esc(&self.size),
            esc(&self.devices.join(", "))
        ));
        if self.interrupted {
            s.push_str("<p class=\"banner\"><b>Interrupted</b>: the campaign was stopped early; the counts below cover the cases that finished.</p>\n");
        }
        if let Some(c) = &self.shards {
            let list: Vec<String> = c.covered.iter().map(|i| i.to_string()).collect();
            s.push_str(&format!(
                "<p class=\"banner\"><b>Part of a campaign</b>: shard(s) {} of {} of the case stream; <code>shardfuzz merge</code> joins the parts.</p>\n",
                list.join(", "),
                c.of
            ));
        }
        let mut nav = vec![
            ("triage", "Triage"),
            ("summary", "Summary"),
            ("comparison", "Comparison"),
            ("buckets", "Buckets"),
            ("charts", "Charts"),
        ];
        if self.regression.is_some() {
            nav.push(("regression", "Regression"));
        }
        nav.extend([("ties", "Near-ties and gradients"), ("grid", "Mesh x layout"), ("time", "Time")]);
        let links: Vec<String> = nav.iter().map(|(id, t)| format!("<a href=\"#{id}\">{t}</a>")).collect();
        s.push_str(&format!("<nav>{}</nav>\n</header>\n", links.join(" ")));
        s
    }
}

/// A section with its heading and a one-line introduction.
fn section(id: &str, title: &str, intro: &str, body: &str) -> String {
    let intro = if intro.is_empty() { String::new() } else { format!("<p class=\"intro\">{intro}</p>\n") };
    format!("<section id=\"{id}\">\n<h2>{title}</h2>\n{intro}{body}</section>\n")
}

/// A sortable table: `head` holds (label, class) per column; class `n` sorts numerically.
fn table(id: &str, extra_class: &str, head: &[(&str, &str)], body: &str) -> String {
    let ths: String =
        head.iter().map(|(h, c)| format!("<th class=\"{c}\" title=\"sort by {}\">{}</th>", esc(h), esc(h))).collect();
    format!(
        "<table id=\"{id}\" class=\"sortable {extra_class}\"><thead><tr>{ths}</tr></thead><tbody>\n{body}</tbody></table>\n"
    )
}

/// A numeric cell (right-aligned, sorted by value).
fn num(n: impl std::fmt::Display) -> String {
    format!("<td class=\"n\" data-v=\"{n}\">{n}</td>")
}

fn text(s: &str) -> String {
    format!("<td>{}</td>", esc(s))
}

fn code(s: &str) -> String {
    format!("<td><code>{}</code></td>", esc(s))
}

/// A link to a file of the campaign directory (a relative path).
fn link(href: &str, label: &str) -> String {
    format!("<a href=\"{}\">{}</a>", esc(&href_of(href)), esc(label))
}

/// A relative path as a URL: the few characters a path may hold that a URL may not.
fn href_of(path: &str) -> String {
    let mut s = String::with_capacity(path.len());
    for ch in path.chars() {
        match ch {
            '%' => s.push_str("%25"),
            '#' => s.push_str("%23"),
            '?' => s.push_str("%3F"),
            ' ' => s.push_str("%20"),
            '"' => s.push_str("%22"),
            _ => s.push(ch),
        }
    }
    s
}

/// `part / whole` as a percentage with one decimal.
fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".into()
    } else {
        format!("{:.1}%", 100.0 * part as f64 / whole as f64)
    }
}

/// The colour of a divergence rate in [0, 1]: white at 0, then yellow through dark red
/// (ColorBrewer YlOrRd, which stays ordered in greyscale and for common colour blindness).
fn heat(rate: f64) -> String {
    const STOPS: [(f64, f64, f64); 8] = [
        (255., 255., 204.),
        (255., 237., 160.),
        (254., 217., 118.),
        (254., 178., 76.),
        (253., 141., 60.),
        (252., 78., 42.),
        (227., 26., 28.),
        (177., 0., 38.),
    ];
    if rate <= 0.0 {
        return "#ffffff".into();
    }
    let x = rate.clamp(0.0, 1.0) * (STOPS.len() - 1) as f64;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - i as f64;
    let mix = |a: f64, b: f64| (a + (b - a) * f).round() as u8;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    format!("#{:02x}{:02x}{:02x}", mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Text that stays readable on `heat(rate)`.
fn ink(rate: f64) -> &'static str {
    if rate > 0.62 {
        "#fff"
    } else {
        "#222"
    }
}

/// A layout's family: one letter per mesh dim that shards x (B batch, L sequence, D model dim,
/// P partial), in that order, or R when none does. Hundreds of layouts (which mesh dim shards
/// which tensor dim, negative dims) fall into a few dozen families, each a mechanism's habitat.
pub fn family(layout: &str) -> String {
    let mut letters: Vec<(usize, String)> = layout
        .split(',')
        .filter_map(|p| {
            let p = p.trim();
            if p.starts_with('P') {
                return Some((3, "P".to_string()));
            }
            let d: i64 = p.strip_prefix("S(")?.strip_suffix(')')?.parse().ok()?;
            Some(match d.rem_euclid(3) {
                0 if (-3..3).contains(&d) => (0, "B".to_string()),
                1 if (-3..3).contains(&d) => (1, "L".to_string()),
                2 if (-3..3).contains(&d) => (2, "D".to_string()),
                _ => (4, format!("S({d})")),
            })
        })
        .collect();
    letters.sort();
    if letters.is_empty() {
        "R".into()
    } else {
        letters.into_iter().map(|(_, l)| l).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_colour_scale_runs_from_white_to_dark_red() {
        assert_eq!(heat(0.0), "#ffffff");
        assert_eq!(heat(1e-9), "#ffffcc");
        assert_eq!(heat(1.0), "#b10026");
        assert_eq!(heat(2.0), "#b10026");
        assert_eq!(href_of("repro/a b#c.json"), "repro/a%20b%23c.json");
        assert_eq!(pct(1, 3), "33.3%");
        assert_eq!(pct(1, 0), "-");
    }
}
