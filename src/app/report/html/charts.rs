//! The page's charts, as inline SVG sized for a 1280-pixel screen: divergence rate by mesh shape
//! and layout family, divergence rate per program x rule set, and (with a baseline) buckets, new
//! and fixed per night.

use super::{esc, family, heat, ink, pct, section};
use crate::report::Report;
use std::collections::BTreeMap;

/// Drawing width of a chart: the page's content width.
const WIDTH: usize = 1180;
/// Most layout families in one heat map block; more are drawn as further blocks.
const MAX_COLUMNS: usize = 28;

/// The sort key of a family: unsharded first, then by how many mesh dims shard, then B, L, D, P.
fn family_key(f: &str) -> (usize, String) {
    let n = if f == "R" { 0 } else { f.chars().filter(|c| c.is_ascii_uppercase() && *c != 'S').count() };
    let order: String = f.chars().map(|c| "BLDP".find(c).map_or('9', |i| (b'0' + i as u8) as char)).collect();
    (n, order)
}

/// `(2,1,4)` -> (3, [2,1,4]): meshes sort by dimension count, then shape.
fn mesh_key(m: &str) -> (usize, Vec<u64>) {
    let dims: Vec<u64> =
        m.trim_matches(|c| c == '(' || c == ')').split(',').filter_map(|x| x.trim().parse().ok()).collect();
    (dims.len(), dims)
}

/// One cell of the heat map: totals and the layouts behind them.
#[derive(Default)]
struct Agg {
    cases: u64,
    diverging: u64,
    layouts: Vec<(String, u64, u64)>,
}

impl Report {
    pub(super) fn html_charts(&self) -> String {
        let body = format!(
            "<h3>Divergence rate by mesh shape and x layout family</h3>\n{}\
             <h3>Divergence rate per program x rule set</h3>\n{}",
            self.heat_map(),
            self.program_bars()
        );
        section("charts", "Charts", "", &body)
    }

    fn heat_map(&self) -> String {
        if self.grid.is_empty() {
            return "<p class=\"muted\">No cases.</p>\n".into();
        }
        let mut cells: BTreeMap<(String, String), Agg> = BTreeMap::new();
        for g in &self.grid {
            let f = family(&g.layout);
            let keys = [
                (g.mesh.clone(), f.clone()),
                (g.mesh.clone(), "all".into()),
                ("all".into(), f),
                ("all".into(), "all".into()),
            ];
            for key in keys {
                let a = cells.entry(key).or_default();
                a.cases += g.cases;
                a.diverging += g.diverging;
                a.layouts.push((g.layout.clone(), g.cases, g.diverging));
            }
        }
        let mut meshes: Vec<String> = self.grid.iter().map(|g| g.mesh.clone()).collect();
        meshes.sort_by_key(|m| mesh_key(m));
        meshes.dedup();
        meshes.push("all".into());
        let mut fams: Vec<String> = self.grid.iter().map(|g| family(&g.layout)).collect();
        fams.sort_by_key(|f| family_key(f));
        fams.dedup();
        let mut s = String::new();
        for chunk in fams.chunks(MAX_COLUMNS) {
            let mut cols = chunk.to_vec();
            cols.push("all".into());
            s.push_str(&heat_block(&meshes, &cols, &cells));
        }
        s.push_str(&legend());
        s.push_str(
            "<p class=\"note\">Columns group the x layouts (B, L, D) by which token dims the mesh dims shard: one letter per \
             sharding mesh dim (B batch, L sequence, D model dim, P partial; <code>LL</code> = the sequence sharded on two \
             mesh dims, <code>R</code> = replicated). Hover a cell for its layouts; the table under <a href=\"#grid\">Mesh \
             x layout</a> lists every one.</p>\n",
        );
        s
    }

    fn program_bars(&self) -> String {
        let rows: Vec<_> = self.rows.iter().collect();
        if rows.is_empty() {
            return "<p class=\"muted\">No rows.</p>\n".into();
        }
        let mut rules: Vec<_> = rows.iter().map(|r| r.rules).collect();
        rules.sort();
        rules.dedup();
        let mut programs: Vec<(&str, &str)> = rows.iter().map(|r| (r.program.as_str(), r.kind.as_str())).collect();
        programs.dedup();
        let (left, bar_h, gap, right) = (230usize, 14usize, 12usize, 190usize);
        let plot = WIDTH - left - right;
        let group_h = rules.len() * (bar_h + 2) + gap;
        let top = 24;
        let height = top + programs.len() * group_h + 8;
        let mut s = format!(
            "<svg class=\"chart\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" aria-label=\"divergence rate per program and rule set\">\n"
        );
        for t in [0, 25, 50, 75, 100] {
            let x = left + plot * t / 100;
            s.push_str(&format!(
                "<line x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\" stroke=\"#ddd\"/><text x=\"{x}\" y=\"14\" text-anchor=\"middle\" class=\"tick\">{t}%</text>\n",
                top - 4,
                height - 4
            ));
        }
        for (gi, (p, kind)) in programs.iter().enumerate() {
            let y0 = top + gi * group_h;
            s.push_str(&format!(
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" class=\"lbl\">{} <tspan class=\"kind\">{}</tspan></text>\n",
                left - 8,
                y0 + (rules.len() * (bar_h + 2)) / 2 + 4,
                esc(p),
                kind
            ));
            for (ri, rs) in rules.iter().enumerate() {
                let Some(r) = rows.iter().find(|r| r.program == *p && r.rules == *rs) else { continue };
                let y = y0 + ri * (bar_h + 2);
                let rate = r.diverging as f64 / r.cases.max(1) as f64;
                let w = ((plot as f64) * rate).round().max(if r.diverging > 0 { 1.0 } else { 0.0 });
                s.push_str(&format!(
                    "<rect x=\"{left}\" y=\"{y}\" width=\"{w}\" height=\"{bar_h}\" fill=\"{}\"><title>{} / {}: {} of {} cases diverge</title></rect>\n\
                     <text x=\"{}\" y=\"{}\" class=\"val\">{} &#183; {} / {}</text>\n",
                    RULE_COLOURS[ri % RULE_COLOURS.len()],
                    esc(p),
                    esc(rs.name()),
                    r.diverging,
                    r.cases,
                    left as f64 + w + 6.0,
                    y + bar_h - 3,
                    pct(r.diverging, r.cases),
                    r.diverging,
                    r.cases
                ));
            }
        }
        s.push_str("</svg>\n");
        let keys: String = rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                format!(
                    "<span class=\"key\"><i style=\"background:{}\"></i>{}</span>",
                    RULE_COLOURS[i % RULE_COLOURS.len()],
                    esc(r.name())
                )
            })
            .collect();
        format!(
            "{s}<p class=\"legend\">{keys} &middot; bar: share of the row's cases with at least one divergence</p>\n"
        )
    }

    /// Buckets, new and fixed per night: the baseline's history, then this run.
    pub(super) fn history_chart(&self) -> String {
        let Some(r) = &self.regression else { return String::new() };
        let mut nights: Vec<(String, usize, usize, usize)> =
            r.history.iter().map(|n| (short(&n.name), n.buckets, n.new, n.fixed)).collect();
        nights.push(("this run".into(), self.buckets.len(), r.new.len(), r.fixed.len()));
        let max = nights.iter().map(|n| n.1.max(n.2).max(n.3)).max().unwrap_or(0).max(1);
        let (left, top, plot_h, bottom) = (50usize, 12usize, 160usize, 48usize);
        let slot = ((WIDTH - left) / nights.len()).clamp(24, 120);
        let bw = (slot - 8) / 3;
        let width = left + slot * nights.len() + 10;
        let height = top + plot_h + bottom;
        let mut s = format!("<svg class=\"chart\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"buckets, new and fixed per night\">\n");
        for t in 0..=4 {
            let y = top + plot_h - plot_h * t / 4;
            s.push_str(&format!(
                "<line x1=\"{left}\" y1=\"{y}\" x2=\"{width}\" y2=\"{y}\" stroke=\"#e4e4e4\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\" class=\"tick\">{}</text>\n",
                left - 6,
                y + 4,
                max * t / 4
            ));
        }
        for (i, (name, buckets, new, fixed)) in nights.iter().enumerate() {
            let x0 = left + i * slot + 4;
            for (j, (v, colour, what)) in
                [(*buckets, "#8c8c8c", "buckets"), (*new, "#d62728", "new"), (*fixed, "#2ca02c", "fixed")]
                    .iter()
                    .enumerate()
            {
                let h = plot_h * v / max;
                s.push_str(&format!(
                    "<rect x=\"{}\" y=\"{}\" width=\"{bw}\" height=\"{h}\" fill=\"{colour}\"><title>{}: {v} {what}</title></rect>\n",
                    x0 + j * bw,
                    top + plot_h - h,
                    esc(name)
                ));
            }
            s.push_str(&format!(
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" class=\"tick\">{}</text>\n",
                x0 + slot / 2 - 4,
                top + plot_h + 16,
                esc(name)
            ));
        }
        s.push_str("</svg>\n<p class=\"legend\"><span class=\"key\"><i style=\"background:#8c8c8c\"></i>buckets</span><span class=\"key\"><i style=\"background:#d62728\"></i>new</span><span class=\"key\"><i style=\"background:#2ca02c\"></i>fixed</span> against the night before (oldest first)</p>\n");
        s
    }
}

/// Rule set colours (Tableau 10: distinct, also in greyscale order).
const RULE_COLOURS: [&str; 6] = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#e15759", "#76b7b2"];

/// A night's label: the last component of its directory, at most 14 characters.
fn short(name: &str) -> String {
    let last = name.trim_end_matches('/').rsplit('/').next().unwrap_or(name);
    if last.chars().count() > 14 {
        format!("{}…", last.chars().take(13).collect::<String>())
    } else {
        last.to_string()
    }
}

/// One heat map block: a row per mesh shape (and "all"), a column per family (and "all").
fn heat_block(meshes: &[String], cols: &[String], cells: &BTreeMap<(String, String), Agg>) -> String {
    let (left, top, ch) = (96usize, 34usize, 24usize);
    // The last column (all layouts) stands a little apart from the families.
    let gap = 6;
    let cw = ((WIDTH - left - 20 - gap) / cols.len()).clamp(30, 64);
    let col_x = |j: usize| left + j * cw + if j + 1 == cols.len() { gap } else { 0 };
    // Rows of one mesh dimension count stay together; a gap sets the groups apart.
    let dims = |m: &str| if m == "all" { usize::MAX } else { mesh_key(m).0 };
    let mut ys = Vec::with_capacity(meshes.len());
    let mut y = top;
    for (i, m) in meshes.iter().enumerate() {
        if i > 0 && dims(m) != dims(&meshes[i - 1]) {
            y += 6;
        }
        ys.push(y);
        y += ch;
    }
    let (width, height) = (left + cw * cols.len() + gap + 12, y + 8);
    let mut s = format!(
        "<svg class=\"chart\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"divergence rate by mesh shape and layout family\">\n\
         <text x=\"{left}\" y=\"11\" class=\"axis\">x layout family &#8594;</text><text x=\"4\" y=\"{}\" class=\"axis\">mesh &#8595;</text>\n",
        top - 6
    );
    for (j, f) in cols.iter().enumerate() {
        let x = col_x(j) + cw / 2;
        s.push_str(&format!(
            "<text x=\"{x}\" y=\"{}\" text-anchor=\"middle\" class=\"lbl\">{}</text>\n",
            top - 6,
            esc(f)
        ));
    }
    for (m, &y) in meshes.iter().zip(&ys) {
        s.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" class=\"lbl\">{}</text>\n",
            left - 6,
            y + 16,
            esc(m)
        ));
        for (j, f) in cols.iter().enumerate() {
            s.push_str(&heat_cell(col_x(j), y, cw, ch, m, f, cells.get(&(m.clone(), f.clone()))));
        }
    }
    s.push_str("</svg>\n");
    s
}

fn heat_cell(x: usize, y: usize, cw: usize, ch: usize, mesh: &str, fam: &str, a: Option<&Agg>) -> String {
    let Some(a) = a.filter(|a| a.cases > 0) else {
        return format!(
            "<rect x=\"{x}\" y=\"{y}\" width=\"{}\" height=\"{}\" fill=\"url(#none)\" class=\"empty\"/>\n",
            cw - 2,
            ch - 2
        );
    };
    let rate = a.diverging as f64 / a.cases as f64;
    let mut layouts = a.layouts.clone();
    layouts.sort_by(|p, q| q.1.cmp(&p.1).then(p.0.cmp(&q.0)));
    let mut tip: Vec<String> = layouts.iter().take(12).map(|(l, c, d)| format!("{l}: {d}/{c}")).collect();
    if layouts.len() > 12 {
        tip.push(format!("... and {} more layouts", layouts.len() - 12));
    }
    let label = if cw >= 34 { format!("{:.0}", 100.0 * rate) } else { String::new() };
    format!(
        "<g><title>mesh {} x {}: {} of {} cases diverge ({})\n{}</title><rect x=\"{x}\" y=\"{y}\" width=\"{}\" height=\"{}\" fill=\"{}\" stroke=\"#bbb\" stroke-width=\"0.5\"/><text x=\"{}\" y=\"{}\" text-anchor=\"middle\" class=\"cell\" fill=\"{}\">{label}</text></g>\n",
        esc(mesh),
        esc(fam),
        a.diverging,
        a.cases,
        pct(a.diverging, a.cases),
        esc(&tip.join("\n")),
        cw - 2,
        ch - 2,
        heat(rate),
        x + cw / 2 - 1,
        y + ch / 2 + 3,
        ink(rate)
    )
}

/// The colour scale, with ticks, and the swatch for cells without cases.
fn legend() -> String {
    let (w, x0) = (300usize, 70usize);
    let mut stops = String::new();
    for i in 0..=20 {
        let r = i as f64 / 20.0;
        stops.push_str(&format!("<stop offset=\"{:.2}\" stop-color=\"{}\"/>", r, heat(r.max(1e-9))));
    }
    let mut s = format!(
        "<svg class=\"chart legend-svg\" width=\"{}\" height=\"44\" viewBox=\"0 0 {} 44\" role=\"img\" aria-label=\"colour scale\">\n\
         <defs><linearGradient id=\"scale\">{stops}</linearGradient>\
         <pattern id=\"none\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\"><rect width=\"6\" height=\"6\" fill=\"#f4f4f4\"/><path d=\"M0 6L6 0\" stroke=\"#cfcfcf\"/></pattern></defs>\n\
         <text x=\"0\" y=\"17\" class=\"lbl\">diverging</text><rect x=\"{x0}\" y=\"6\" width=\"{w}\" height=\"14\" fill=\"url(#scale)\" stroke=\"#999\" stroke-width=\"0.5\"/>\n",
        x0 + w + 200,
        x0 + w + 200
    );
    for t in [0, 25, 50, 75, 100] {
        let x = x0 + w * t / 100;
        s.push_str(&format!(
            "<line x1=\"{x}\" y1=\"20\" x2=\"{x}\" y2=\"25\" stroke=\"#666\"/><text x=\"{x}\" y=\"37\" text-anchor=\"middle\" class=\"tick\">{t}%</text>\n"
        ));
    }
    s.push_str(&format!(
        "<rect x=\"{}\" y=\"6\" width=\"22\" height=\"14\" fill=\"url(#none)\" stroke=\"#999\" stroke-width=\"0.5\"/><text x=\"{}\" y=\"17\" class=\"lbl\">no cases</text>\n</svg>\n",
        x0 + w + 40,
        x0 + w + 68
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_fall_into_families_by_the_dims_they_shard() {
        assert_eq!(family("R,R,R"), "R");
        assert_eq!(family("S(1)"), "L");
        assert_eq!(family("S(-2),R"), "L");
        assert_eq!(family("S(1),S(0)"), "BL");
        assert_eq!(family("S(-1),S(2)"), "DD");
        assert_eq!(family("P(sum),S(0)"), "BP");
        assert_eq!(family("S(5)"), "S(5)");
        let mut f = vec!["BL", "R", "L", "B", "LL", "D"];
        f.sort_by_key(|x| family_key(x));
        assert_eq!(f, vec!["R", "B", "L", "D", "BL", "LL"]);
        assert_eq!(mesh_key("(2,1,4)"), (3, vec![2, 1, 4]));
    }
}
