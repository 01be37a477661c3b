//! `report.html`: the summary, a heat map of divergence rate by mesh shape and token layout,
//! and the tables.

use super::{xml, Report};

impl Report {
    pub fn html(&self) -> String {
        let head = "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>shardfuzz report</title>\n<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}pre{white-space:pre-wrap}</style></head><body>\n";
        format!(
            "{head}<h1>shardfuzz campaign</h1>\n<p>{} cases, {} diverging, {} buckets, seed {}.</p>\n\
             <h2>Divergence rate by mesh shape and token layout</h2>\n{}\n\
             <h2>Tables</h2>\n<pre>{}</pre>\n</body></html>\n",
            self.cases,
            self.diverging_cases,
            self.buckets.len(),
            self.seed,
            self.svg(),
            xml(&self.markdown())
        )
    }

    /// A heat map: one row per mesh shape, one column per x layout, shade = divergence rate.
    fn svg(&self) -> String {
        let mut meshes: Vec<&str> = self.grid.iter().map(|g| g.mesh.as_str()).collect();
        meshes.sort_unstable();
        meshes.dedup();
        let mut layouts: Vec<&str> = self.grid.iter().map(|g| g.layout.as_str()).collect();
        layouts.sort_unstable();
        layouts.dedup();
        let (cw, ch, left, top) = (44, 22, 90, 110);
        let w = left + cw * layouts.len() + 10;
        let h = top + ch * meshes.len() + 10;
        let mut s =
            format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-size=\"10\">\n");
        for (j, l) in layouts.iter().enumerate() {
            let x = left + j * cw + cw / 2;
            s.push_str(&format!("<text transform=\"translate({x},{}) rotate(-60)\">{}</text>\n", top - 4, xml(l)));
        }
        for (i, m) in meshes.iter().enumerate() {
            let y = top + i * ch;
            s.push_str(&format!("<text x=\"4\" y=\"{}\">mesh {}</text>\n", y + 15, xml(m)));
            for (j, l) in layouts.iter().enumerate() {
                if let Some(g) = self.grid.iter().find(|g| g.mesh == *m && g.layout == *l) {
                    let other = (255.0 * (1.0 - g.diverging as f64 / g.cases.max(1) as f64)) as u8;
                    s.push_str(&format!(
                        "<rect x=\"{}\" y=\"{y}\" width=\"{}\" height=\"{}\" fill=\"rgb(255,{other},{other})\" stroke=\"#999\"><title>mesh {} x {}: {}/{} diverging</title></rect>\n",
                        left + j * cw,
                        cw - 2,
                        ch - 2,
                        xml(m),
                        xml(l),
                        g.diverging,
                        g.cases
                    ));
                }
            }
        }
        s.push_str("</svg>");
        s
    }
}
