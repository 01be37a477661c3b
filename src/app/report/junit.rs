//! `junit.xml`: one test case per finding (a mechanism, crate::triage), so a CI job is red only
//! when something needs a person: by default new and regressed findings fail; known upstream
//! bugs, expected limitations, open and fixed findings are passed test cases that say their
//! status (`--fail-on` changes the rule, for junit.xml and the exit status alike).

use super::{xml, Report};
use crate::triage::{FailOn, Finding, Status};

impl Report {
    pub fn junit(&self, fail: &FailOn) -> String {
        let findings = self.triage();
        let failures = findings.iter().filter(|f| fail.fails(f.status)).count();
        let tests = findings.len().max(1);
        let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        s.push_str(&format!("<testsuites name=\"shardfuzz\" tests=\"{tests}\" failures=\"{failures}\">\n"));
        s.push_str(&format!(
            "  <testsuite name=\"shardfuzz findings\" tests=\"{tests}\" failures=\"{failures}\">\n    <properties><property name=\"fail-on\" value=\"{}\"/><property name=\"cases\" value=\"{}\"/><property name=\"buckets\" value=\"{}\"/></properties>\n",
            fail.0.iter().map(|x| x.name()).collect::<Vec<_>>().join(","),
            self.cases,
            self.buckets.len()
        ));
        if findings.is_empty() {
            s.push_str(&format!(
                "    <testcase classname=\"shardfuzz\" name=\"no divergence in {} cases\"/>\n",
                self.cases
            ));
        }
        for f in &findings {
            s.push_str(&self.junit_case(f, fail.fails(f.status)));
        }
        s.push_str("  </testsuite>\n</testsuites>\n");
        s
    }

    fn junit_case(&self, f: &Finding, fails: bool) -> String {
        let status = match f.status {
            Status::Known => format!("known upstream ({})", f.link),
            Status::Expected => format!("expected limitation: {}", f.reason),
            s => s.name().to_string(),
        };
        let smallest = f.smallest_bucket(&self.buckets);
        let repro =
            smallest.map_or(String::new(), |b| format!("; smallest reproducer {} ({})", Self::link(b), b.signature));
        let text = format!(
            "{status}: {} bucket(s), {} case(s){repro}; signatures: {}",
            f.buckets.len(),
            f.cases,
            f.buckets.join(", ")
        );
        let name = xml(&format!("[{}] {}", f.status.name(), f.mechanism));
        let class = format!("shardfuzz.{}", f.status.name());
        if fails {
            format!(
                "    <testcase classname=\"{class}\" name=\"{name}\">\n      <failure message=\"{} finding: {}\">{}</failure>\n    </testcase>\n",
                f.status.name(),
                xml(&f.mechanism),
                xml(&text)
            )
        } else {
            format!(
                "    <testcase classname=\"{class}\" name=\"{name}\">\n      <system-out>{}</system-out>\n    </testcase>\n",
                xml(&text)
            )
        }
    }
}
