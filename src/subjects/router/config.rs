//! Router configuration (torchtitan's `TokenChoiceTopKRouter.Config` plus the MoE bias switch),
//! validated once at construction so that neither the reference nor the sharded router ever
//! sees an invalid combination. Presets are named after the models they come from.

use serde::{Deserialize, Serialize};

names::named_enum! {
    pub enum ScoreFunc("score_func") {
        Softmax = "softmax",
        Sigmoid = "sigmoid",
    }
}

/// Node-limited routing: E experts in `num_groups` contiguous groups, `num_limited` kept per token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Groups {
    pub num_groups: usize,
    pub num_limited: usize,
}

/// The router settings besides its sizes: what a case file's `router` object holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterOptions {
    pub score_func: ScoreFunc,
    pub route_norm: bool,
    pub route_scale: f64,
    pub groups: Option<Groups>,
    pub expert_bias: bool,
    pub force_load_balance: bool,
    /// The gate Linear has a bias (`logits = x·Wᵀ + b`); absent in files means false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gate_bias: bool,
}

impl RouterOptions {
    /// torchtitan's builder defaults (`make_router_config`): sigmoid, no norm, scale 1, no groups.
    pub fn plain(score_func: ScoreFunc) -> RouterOptions {
        RouterOptions {
            score_func,
            route_norm: false,
            route_scale: 1.0,
            groups: None,
            expert_bias: false,
            force_load_balance: false,
            gate_bias: false,
        }
    }
}

/// A validated router: sizes (E experts, top K) and options.
#[derive(Clone, Debug, PartialEq)]
pub struct RouterConfig {
    pub experts: usize,
    pub top_k: usize,
    pub options: RouterOptions,
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
    /// Validates every field, with torchtitan's texts where it has them.
    pub fn new(experts: usize, top_k: usize, options: RouterOptions) -> Result<RouterConfig, ConfigError> {
        if experts == 0 {
            return Err(bad("experts", "must be at least 1".into()));
        }
        if top_k == 0 {
            return Err(bad("top_k", "must be at least 1".into()));
        }
        if top_k > experts {
            return Err(bad("top_k", format!("top_k ({top_k}) exceeds the number of experts ({experts})")));
        }
        if !options.route_scale.is_finite() {
            return Err(bad("route_scale", format!("must be finite, got {}", options.route_scale)));
        }
        if let Some(Groups { num_groups: g, num_limited: gk }) = options.groups {
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
        }
        Ok(RouterConfig { experts, top_k, options })
    }

    pub fn experts_per_group(&self) -> Option<usize> {
        self.options.groups.map(|g| self.experts / g.num_groups)
    }
}

names::named_enum! {
    /// A named setting from a real model, with the model dim it runs at.
    pub enum Preset("preset") {
        /// torchtitan `deepseek_v3` `_debugmodel`: E=8, K=3, softmax, D=256.
        DeepSeekV3Debug = "deepseek-v3-debug",
        /// DeepSeek-V3 236B router: E=160, K=6, softmax, G=8, Gk=3, scale 16.
        DeepSeekV3_236B = "deepseek-v3-236b",
        /// DeepSeek-V3 671B router: E=256, K=8, sigmoid, G=8, Gk=4, scale 2.5, route_norm.
        DeepSeekV3_671B = "deepseek-v3-671b",
        /// Qwen3-MoE-like (30B-A3B): E=128, K=8, softmax + route_norm, D=2048.
        Qwen3Moe = "qwen3-moe",
    }
}

impl Preset {
    /// The model dim D of the preset's model.
    pub(crate) fn model_dim(self) -> usize {
        match self {
            Preset::DeepSeekV3Debug => 256,
            Preset::DeepSeekV3_236B => 5120,
            Preset::DeepSeekV3_671B => 7168,
            Preset::Qwen3Moe => 2048,
        }
    }

    pub fn config(self) -> RouterConfig {
        let opts = |score_func, route_norm, route_scale, groups: Option<(usize, usize)>, expert_bias| RouterOptions {
            score_func,
            route_norm,
            route_scale,
            groups: groups.map(|(num_groups, num_limited)| Groups { num_groups, num_limited }),
            expert_bias,
            force_load_balance: false,
            gate_bias: false,
        };
        let (e, k, o) = match self {
            Preset::DeepSeekV3Debug => (8, 3, opts(ScoreFunc::Softmax, false, 1.0, None, true)),
            Preset::DeepSeekV3_236B => (160, 6, opts(ScoreFunc::Softmax, false, 16.0, Some((8, 3)), true)),
            Preset::DeepSeekV3_671B => (256, 8, opts(ScoreFunc::Sigmoid, true, 2.5, Some((8, 4)), true)),
            Preset::Qwen3Moe => (128, 8, opts(ScoreFunc::Softmax, true, 1.0, None, false)),
        };
        RouterConfig::new(e, k, o).expect("presets are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(e: usize, k: usize, g: Option<(usize, usize)>) -> Result<RouterConfig, ConfigError> {
        let groups = g.map(|(num_groups, num_limited)| Groups { num_groups, num_limited });
        RouterConfig::new(e, k, RouterOptions { groups, ..RouterOptions::plain(ScoreFunc::Sigmoid) })
    }

    #[test]
    fn invalid_configs_name_their_field() {
        assert_eq!(cfg(8, 9, None).unwrap_err().field, "top_k");
        assert_eq!(cfg(8, 0, None).unwrap_err().field, "top_k");
        assert_eq!(cfg(8, 2, Some((3, 1))).unwrap_err().field, "groups.num_groups");
        assert_eq!(
            cfg(8, 2, Some((8, 1))).unwrap_err().to_string(),
            "groups.num_groups: experts_per_group (1) must be >= 2"
        );
        assert_eq!(cfg(8, 2, Some((4, 5))).unwrap_err().field, "groups.num_limited");
        assert_eq!(cfg(8, 2, Some((4, 0))).unwrap_err().field, "groups.num_limited");
        let nan = RouterOptions { route_scale: f64::NAN, ..RouterOptions::plain(ScoreFunc::Softmax) };
        assert!(RouterConfig::new(8, 2, nan).is_err());
        assert!(cfg(8, 2, Some((4, 2))).is_ok());
    }

    #[test]
    fn presets_are_valid_and_named() {
        for &p in Preset::ALL {
            let c = p.config();
            assert!(c.top_k <= c.experts);
            assert_eq!(p.name().parse::<Preset>().unwrap(), p);
        }
        assert_eq!(Preset::DeepSeekV3_671B.config().options.groups, Some(Groups { num_groups: 8, num_limited: 4 }));
    }
}
