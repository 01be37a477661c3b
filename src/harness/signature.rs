//! A divergence's signature, `class:output:program:rules:key`: what buckets group by (the
//! program is what the subject names it: for the router, its revision, or the boundary
//! revision for backward verdicts). The key names the check that fired or the placement mismatch, with sizes removed, so one bucket holds
//! one mechanism. Printed and parsed in that form (the key may itself contain `:`); ordered as
//! its printed form, so reports list buckets the same way whatever built them.

use crate::verdict::Class;
use dtensor::RuleSet;
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Signature {
    pub class: Class,
    /// The output or gradient concerned (`counts`, `gate.weight`), when the verdict names one.
    pub output: Option<String>,
    /// The program the verdict is about, as its subject names it (unique across subjects).
    pub program: String,
    pub rules: RuleSet,
    /// Empty when the class needs no key.
    pub key: String,
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = if self.key.is_empty() { "-" } else { &self.key };
        write!(f, "{}:{}:{}:{}:{key}", self.class, self.output.as_deref().unwrap_or("-"), self.program, self.rules)
    }
}

impl FromStr for Signature {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut it = s.splitn(5, ':');
        let mut part = |what: &str| it.next().ok_or_else(|| format!("signature '{s}': no {what}"));
        let class = part("class")?.parse()?;
        let output = Some(part("output")?).filter(|o| *o != "-").map(String::from);
        let program = part("program")?.to_string();
        if program.is_empty() {
            return Err(format!("signature '{s}': empty program"));
        }
        let rules = part("rule set")?.parse()?;
        let key = Some(part("key")?).filter(|k| *k != "-").unwrap_or_default().to_string();
        Ok(Signature { class, output, program, rules, key })
    }
}

impl PartialOrd for Signature {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Signature {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.to_string().cmp(&other.to_string())
    }
}

names::serde_as_str!(Signature);

impl Signature {
    /// A file-name-safe form.
    pub fn slug(&self) -> String {
        slug(&self.to_string())
    }
}

/// A file-name-safe form of a signature's text.
pub fn slug(sig: &str) -> String {
    let mut s = String::with_capacity(sig.len());
    for ch in sig.chars() {
        match ch {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' => s.push(ch),
            '(' | ')' | '[' | ']' => {}
            '>' => s.push_str("to"),
            '@' => s.push_str("at"),
            _ => s.push('_'),
        }
    }
    while s.contains("__") {
        s = s.replace("__", "_");
    }
    s.trim_matches('_').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_print_parse_and_slug() {
        for text in [
            "placement:counts:inplace_scatter:torch-2.13:P(sum)->R@1",
            "error:-:inplace_scatter:torch-2.12:RuntimeError:inplace_placement_change@aten.scatter_.value",
            "nondeterminism:-:local_map_both:torch-2.14:-",
        ] {
            let s: Signature = text.parse().unwrap();
            assert_eq!(s.to_string(), text);
        }
        let s: Signature = "error:-:inplace_scatter:torch-2.12:RuntimeError:view_of_sharded_dim".parse().unwrap();
        assert_eq!(
            (s.class, s.output.as_deref(), s.key.as_str()),
            (Class::Error, None, "RuntimeError:view_of_sharded_dim")
        );
        let p: Signature = "placement:counts:inplace_scatter:torch-2.13:P(sum)->R@1".parse().unwrap();
        assert_eq!(p.slug(), "placement_counts_inplace_scatter_torch-2.13_Psum-toRat1");
        assert!("placement:counts:inplace_scatter:torch-9.9:x".parse::<Signature>().is_err());
        assert!("value:x".parse::<Signature>().is_err());
    }
}
