//! Router configuration (torchtitan's `TokenChoiceTopKRouter.Config` plus the MoE bias switch),
//! validated once at construction so that neither the reference nor the sharded router ever
//! sees an invalid combination. Presets are named after the models they come from.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoreFunc {
    Softmax,
    Sigmoid,
}

impl ScoreFunc {
    pub fn name(self) -> &'static str {
        match self {
            ScoreFunc::Softmax => "softmax",
            ScoreFunc::Sigmoid => "sigmoid",
        }
    }
}

impl FromStr for ScoreFunc {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "softmax" => Ok(ScoreFunc::Softmax),
            "sigmoid" => Ok(ScoreFunc::Sigmoid),
            _ => Err(format!("unknown score_func '{s}' (expected softmax or sigmoid)")),
        }
    }
}

/// Node-limited routing: E experts in `num_groups` contiguous groups, `num_limited` kept per token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Groups {
    pub num_groups: usize,
    pub num_limited: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RouterConfig {
    pub experts: usize,
    pub top_k: usize,
    pub score_func: ScoreFunc,
    pub route_norm: bool,
    pub route_scale: f64,
    pub groups: Option<Groups>,
    pub expert_bias: bool,
    pub force_load_balance: bool,
}

/// A rejected configuration; the message names the offending field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    pub field: &'static str,
    pub message: String,
}

fn bad(field: &'static str, message: String) -> ConfigError {
    ConfigError { field, message }
}

impl RouterConfig {
    /// Validates every field. `num_limited` is optional here so that torchtitan's own
    /// "num_limited_groups must be set when num_expert_groups is set" is reported as such.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        experts: usize,
        top_k: usize,
        score_func: ScoreFunc,
        route_norm: bool,
        route_scale: f64,
        groups: Option<(usize, Option<usize>)>,
        expert_bias: bool,
        force_load_balance: bool,
    ) -> Result<RouterConfig, ConfigError> {
        if experts == 0 {
            return Err(bad("experts", "must be at least 1".into()));
        }
        if top_k == 0 {
            return Err(bad("top_k", "must be at least 1".into()));
        }
        if top_k > experts {
            return Err(bad("top_k", format!("top_k ({top_k}) exceeds the number of experts ({experts})")));
        }
        if !route_scale.is_finite() {
            return Err(bad("route_scale", format!("must be finite, got {route_scale}")));
        }
        let groups = match groups {
            None => None,
            Some((g, gk)) => {
                let gk = gk.ok_or_else(|| {
                    bad("groups.num_limited", "num_limited_groups must be set when num_expert_groups is set".into())
                })?;
                if g == 0 {
                    return Err(bad("groups.num_groups", "must be at least 1".into()));
                }
                if !experts.is_multiple_of(g) {
                    return Err(bad(
                        "groups.num_groups",
                        format!("num_experts ({experts}) must be divisible by num_expert_groups ({g})"),
                    ));
                }
                if experts / g < 2 {
                    return Err(bad("groups.num_groups", format!("experts_per_group ({}) must be >= 2", experts / g)));
                }
                if gk == 0 || gk > g {
                    return Err(bad(
                        "groups.num_limited",
                        format!("num_limited ({gk}) must be between 1 and num_groups ({g})"),
                    ));
                }
                Some(Groups { num_groups: g, num_limited: gk })
            }
        };
        Ok(RouterConfig {
            experts,
            top_k,
            score_func,
            route_norm,
            route_scale,
            groups,
            expert_bias,
            force_load_balance,
        })
    }

    pub fn experts_per_group(&self) -> Option<usize> {
        self.groups.map(|g| self.experts / g.num_groups)
    }
}

/// A named setting from a real model, with the model dim it runs at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Preset {
    /// torchtitan `deepseek_v3` `_debugmodel`: E=8, K=3, softmax, D=256.
    DeepSeekV3Debug,
    /// DeepSeek-V3 236B router: E=160, K=6, softmax, G=8, Gk=3, scale 16.
    DeepSeekV3_236B,
    /// DeepSeek-V3 671B router: E=256, K=8, sigmoid, G=8, Gk=4, scale 2.5, route_norm.
    DeepSeekV3_671B,
    /// Qwen3-MoE-like (30B-A3B): E=128, K=8, softmax + route_norm, D=2048.
    Qwen3Moe,
}

impl Preset {
    pub const ALL: [Preset; 4] =
        [Preset::DeepSeekV3Debug, Preset::DeepSeekV3_236B, Preset::DeepSeekV3_671B, Preset::Qwen3Moe];

    pub fn name(self) -> &'static str {
        match self {
            Preset::DeepSeekV3Debug => "deepseek-v3-debug",
            Preset::DeepSeekV3_236B => "deepseek-v3-236b",
            Preset::DeepSeekV3_671B => "deepseek-v3-671b",
            Preset::Qwen3Moe => "qwen3-moe",
        }
    }

    /// The model dim D of the preset's model.
    pub fn model_dim(self) -> usize {
        match self {
            Preset::DeepSeekV3Debug => 256,
            Preset::DeepSeekV3_236B => 5120,
            Preset::DeepSeekV3_671B => 7168,
            Preset::Qwen3Moe => 2048,
        }
    }

    pub fn config(self) -> RouterConfig {
        let c = match self {
            Preset::DeepSeekV3Debug => RouterConfig::new(8, 3, ScoreFunc::Softmax, false, 1.0, None, true, false),
            Preset::DeepSeekV3_236B => {
                RouterConfig::new(160, 6, ScoreFunc::Softmax, false, 16.0, Some((8, Some(3))), true, false)
            }
            Preset::DeepSeekV3_671B => {
                RouterConfig::new(256, 8, ScoreFunc::Sigmoid, true, 2.5, Some((8, Some(4))), true, false)
            }
            Preset::Qwen3Moe => RouterConfig::new(128, 8, ScoreFunc::Softmax, true, 1.0, None, false, false),
        };
        c.expect("presets are valid")
    }
}

impl FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Preset::ALL.into_iter().find(|p| p.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Preset::ALL.iter().map(|p| p.name()).collect();
            format!("unknown preset '{s}' (expected one of {})", names.join(", "))
        })
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(e: usize, k: usize, g: Option<(usize, Option<usize>)>) -> Result<RouterConfig, ConfigError> {
        RouterConfig::new(e, k, ScoreFunc::Sigmoid, false, 1.0, g, false, false)
    }

    #[test]
    fn invalid_configs_name_their_field() {
        assert_eq!(cfg(8, 9, None).unwrap_err().field, "top_k");
        assert_eq!(cfg(8, 0, None).unwrap_err().field, "top_k");
        assert_eq!(cfg(8, 2, Some((4, None))).unwrap_err().field, "groups.num_limited");
        assert_eq!(cfg(8, 2, Some((3, Some(1)))).unwrap_err().field, "groups.num_groups");
        assert_eq!(
            cfg(8, 2, Some((8, Some(1)))).unwrap_err().to_string(),
            "groups.num_groups: experts_per_group (1) must be >= 2"
        );
        assert_eq!(cfg(8, 2, Some((4, Some(5)))).unwrap_err().field, "groups.num_limited");
        assert!(RouterConfig::new(8, 2, ScoreFunc::Softmax, false, f64::NAN, None, false, false).is_err());
        assert!(cfg(8, 2, Some((4, Some(2)))).is_ok());
    }

    #[test]
    fn presets_are_valid_and_named() {
        for p in Preset::ALL {
            let c = p.config();
            assert!(c.top_k <= c.experts);
            assert_eq!(p.name().parse::<Preset>().unwrap(), p);
        }
        assert_eq!(Preset::DeepSeekV3_671B.config().groups, Some(Groups { num_groups: 8, num_limited: 4 }));
    }
}
