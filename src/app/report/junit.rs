//! `junit.xml`: one test suite per revision x rule set row, one failing test case per bucket,
//! so CI systems show each divergence class as a failed test.

use super::{xml, Report};
use crate::bucket::Bucket;

impl Report {
    pub fn junit(&self) -> String {
        let failures = self.buckets.len();
        let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        s.push_str(&format!(
            "<testsuites name=\"shardfuzz\" tests=\"{}\" failures=\"{failures}\">\n",
            self.rows.len() + failures
        ));
        for r in &self.rows {
            let (router, rules) = (xml(&r.program), xml(r.rules.name()));
            let bs: Vec<&Bucket> = self
                .buckets
                .iter()
                .filter(|b| b.signature.program == r.program && b.signature.rules == r.rules)
                .collect();
            s.push_str(&format!(
                "  <testsuite name=\"{router}/{rules}\" tests=\"{}\" failures=\"{}\">\n",
                bs.len().max(1),
                bs.len()
            ));
            if bs.is_empty() {
                s.push_str(&format!(
                    "    <testcase classname=\"{router}.{rules}\" name=\"no divergence in {} cases\"/>\n",
                    r.cases
                ));
            }
            for b in bs {
                s.push_str(&format!(
                    "    <testcase classname=\"{router}.{rules}\" name=\"{}\">\n      <failure message=\"{}\">{} case(s); reproducer {}; {}</failure>\n    </testcase>\n",
                    xml(&b.signature.to_string()),
                    xml(&b.explanation),
                    b.count,
                    xml(b.repro.as_deref().unwrap_or(&b.first_case)),
                    xml(&b.detail)
                ));
            }
            s.push_str("  </testsuite>\n");
        }
        s.push_str("</testsuites>\n");
        s
    }
}
