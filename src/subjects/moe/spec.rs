//! The MoE-layer subject's spec: what an MoE case holds beyond the harness's envelope (the
//! `subject` object of a `shardfuzz.case/2` file, `kind` "moe"), exactly as the case contract
//! with the real-torchtitan recorder has it (docs/moe-layer.md). Unknown fields are errors and
//! every invalid value is reported with the path of its field.
//!
//! Configurations torchtitan itself rejects (a non-dividing ep, K > E, a bad group setting, a
//! non-positive coefficient, D not a multiple of 8, ...) are *valid* cases: their verdict is the
//! error the run raises. Only what cannot describe a run at all is invalid here.

use crate::revision::{Backend, MoeRev};
use dtensor::DType;
use harness::case::{err, CaseError, Common};
use harness::limits::{check_sizes, TensorSize};
use harness::subject::InputSpec;
use placement::Mesh;
use router::ScoreFunc;
use serde::{Deserialize, Serialize};

/// The dense compute mesh's axes, in order.
pub const MESH_NAMES: [&str; 3] = ["dp", "cp", "tp"];

/// Parallel settings beyond the mesh.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parallel {
    /// dp = dp_replicate · dp_shard.
    pub dp_replicate: usize,
    /// Expert-parallel degree (1: EP off).
    pub ep: usize,
    /// enable_sequence_parallel.
    pub sp: bool,
}

/// Sizes: x is (batch, seq, model) (from `tt-head` on (batch·seq, model), with batch = dp:
/// seq tokens per dp rank); routed experts' hidden dim `hidden`; shared experts' hidden
/// dim `shared_hidden` (null: no shared experts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dims {
    pub batch: usize,
    pub seq: usize,
    pub model: usize,
    pub hidden: usize,
    pub experts: usize,
    pub top_k: usize,
    pub shared_hidden: Option<usize>,
}

/// Node-limited routing; `num_limited` may be null (torchtitan raises at the first forward).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Groups {
    pub num_groups: usize,
    pub num_limited: Option<usize>,
}

/// TokenChoiceTopKRouter's options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterOpts {
    pub score_func: ScoreFunc,
    pub route_norm: bool,
    pub route_scale: f64,
    pub groups: Option<Groups>,
    pub force_load_balance: bool,
    /// `MoEArgs.score_before_experts` of torchtitan 0.2.x: the top-k scores multiply the routed
    /// rows before the experts (float32, cast back) and the combine sums the K outputs, instead
    /// of scaling the outputs. 2026 torchtitan has no such switch (its models scale the
    /// outputs), so only `tt-0.2.2` accepts true; false is left out of the file.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub score_before_experts: bool,
}

fn yes() -> bool {
    true
}

/// An MoE case's subject.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoeSpec {
    pub revision: MoeRev,
    pub backend: Backend,
    pub parallel: Parallel,
    pub dims: Dims,
    pub router: RouterOpts,
    /// null: no expert_bias buffer and no hook.
    pub load_balance_coeff: Option<f64>,
    pub backward: bool,
    /// Replay the trainer's sequence-length check (default true).
    #[serde(default = "yes")]
    pub trainer_checks: bool,
    /// spmd_types' global type checking (spmd_types only; default false).
    #[serde(default)]
    pub typecheck: bool,
}

impl MoeSpec {
    /// dp, cp, tp of the case's mesh.
    pub fn axes(c: &Common) -> (usize, usize, usize) {
        let s = &c.mesh.shape;
        (s[0], s[1], s[2])
    }

    /// The router's config for the router crate's math, when torchtitan would build and run it
    /// (`Err`: the message of the error the real forward raises).
    pub fn router_config(&self) -> Result<router::RouterConfig, String> {
        let d = &self.dims;
        let groups = match self.router.groups {
            None => None,
            Some(Groups { num_limited: None, .. }) => {
                return Err("num_limited_groups must be set when num_expert_groups is set".into())
            }
            Some(Groups { num_groups, num_limited: Some(k) }) => Some(router::Groups { num_groups, num_limited: k }),
        };
        let options = router::RouterOptions {
            score_func: self.router.score_func,
            route_norm: self.router.route_norm,
            route_scale: self.router.route_scale,
            groups,
            expert_bias: self.load_balance_coeff.is_some(),
            force_load_balance: self.router.force_load_balance,
            gate_bias: false,
        };
        router::RouterConfig::new(d.experts, d.top_k, options).map_err(|e| e.message)
    }

    fn sizes(&self, c: &Common) -> Vec<(&'static str, &'static str, [usize; 3], u64)> {
        let d = &self.dims;
        let (dp, cp, _) = Self::axes(c);
        let _ = (dp, cp);
        let mut v = vec![
            ("x", "batch·seq·model", [d.batch, d.seq, d.model], 3),
            ("w1", "experts·hidden·model", [d.experts, d.hidden, d.model], 6),
            ("routed", "batch·seq·top_k·model", [d.batch * d.seq, d.top_k, d.model], 4),
            ("scores", "batch·seq·experts", [d.batch, d.seq, d.experts], 4),
        ];
        if let Some(fs) = d.shared_hidden {
            v.push(("shared_w1", "shared_hidden·model", [fs, d.model, 1], 6));
        }
        v
    }

    /// Every check of the subject, after the envelope's.
    pub fn validate(&self, c: &Common, mesh: &Mesh) -> Result<(), CaseError> {
        if c.mesh.names != MESH_NAMES || c.mesh.shape.len() != 3 {
            return err(format!(
                "mesh.names: an MoE case runs on the dense mesh [\"dp\", \"cp\", \"tp\"], found {:?}",
                c.mesh.names
            ));
        }
        let d = &self.dims;
        for (name, v) in [
            ("batch", d.batch),
            ("seq", d.seq),
            ("model", d.model),
            ("hidden", d.hidden),
            ("experts", d.experts),
            ("top_k", d.top_k),
        ] {
            if v == 0 {
                return err(format!("subject.dims.{name}: must be at least 1"));
            }
        }
        if d.shared_hidden == Some(0) {
            return err("subject.dims.shared_hidden: must be at least 1 (or null: no shared experts)");
        }
        let p = &self.parallel;
        if p.dp_replicate == 0 {
            return err("subject.parallel.dp_replicate: must be at least 1");
        }
        if p.ep == 0 {
            return err("subject.parallel.ep: must be at least 1");
        }
        let (dp, _, _) = Self::axes(c);
        if dp % p.dp_replicate != 0 {
            return err(format!(
                "subject.parallel.dp_replicate: {} does not divide mesh dp = {dp} (dp = dp_replicate · dp_shard)",
                p.dp_replicate
            ));
        }
        if !self.router.route_scale.is_finite() {
            return err("subject.router.route_scale: must be finite");
        }
        if let Some(g) = self.router.groups {
            if g.num_groups == 0 {
                return err("subject.router.groups.num_groups: must be at least 1");
            }
            if g.num_limited == Some(0) {
                return err("subject.router.groups.num_limited: must be at least 1 (or null)");
            }
        }
        if let Some(k) = self.load_balance_coeff {
            if !k.is_finite() {
                return err("subject.load_balance_coeff: must be finite (or null)");
            }
        }
        if self.revision.folds_batch() {
            self.validate_tokens(dp)?;
        }
        self.validate_revision()?;
        if self.typecheck && self.backend != Backend::SpmdTypes {
            return err(format!("subject.typecheck: only the spmd_types backend type-checks, found {}", self.backend));
        }
        if c.dtype == DType::F16 {
            return err("dtype: an MoE case is f32 or bf16");
        }
        let sizes = self.sizes(c);
        let tensors: Vec<TensorSize> = sizes
            .iter()
            .map(|(what, formula, dims, copies)| TensorSize { what, formula, dims, copies: *copies })
            .collect();
        check_sizes(mesh.size(), &tensors).map_err(|e| CaseError(format!("subject.{e}")))
    }

    /// What only `tt-0.2.2` has or lacks: its one backend (`dtensor_hooks`, and no other
    /// revision's), `score_before_experts`, and no sequence-parallel switch (TP always shards
    /// the MoE input's sequence there).
    fn validate_revision(&self) -> Result<(), CaseError> {
        let old = self.revision == MoeRev::Tt022;
        if old != (self.backend == Backend::DtensorHooks) {
            return err(format!(
                "subject.backend: {} runs on dtensor_hooks only and dtensor_hooks is {}'s only backend, found {} at {}",
                MoeRev::Tt022,
                MoeRev::Tt022,
                self.backend,
                self.revision
            ));
        }
        if self.router.score_before_experts && !old {
            return err(format!(
                "subject.router.score_before_experts: only {} has this switch (later revisions scale the experts' outputs), found it true at {}",
                MoeRev::Tt022,
                self.revision
            ));
        }
        if old && !self.parallel.sp {
            return err(format!(
                "subject.parallel.sp: {} has no sequence-parallel switch (TP always shards the MoE input's sequence); set it true",
                MoeRev::Tt022
            ));
        }
        Ok(())
    }

    /// `tt-head`: the batch is folded into the tokens and every dp rank holds `seq` of them, so
    /// `batch` is dp; full_dtensor no longer exists (#4217).
    fn validate_tokens(&self, dp: usize) -> Result<(), CaseError> {
        if self.dims.batch != dp {
            return err(format!(
                "subject.dims.batch: at {} x is (T, D) with seq tokens per dp rank, so batch must be mesh dp = {dp}, found {}",
                self.revision, self.dims.batch
            ));
        }
        if self.backend == Backend::FullDtensor {
            return err(format!("subject.backend: {} has no full_dtensor backend (removed by #4217)", self.revision));
        }
        Ok(())
    }

    /// The inputs, in file order: x, grad_y (backward), gate, expert_bias (with a coefficient),
    /// w1, w2, w3, the shared experts' weights (with shared experts). x and grad_y are
    /// (batch, seq, model), or (batch·seq, model) where the revision folds the batch.
    pub fn inputs(&self, c: &Common) -> Vec<InputSpec> {
        let d = &self.dims;
        let t = c.dtype;
        let i = |name, shape: Vec<usize>, dtype| InputSpec { name, shape, dtype };
        let tokens =
            if self.revision.folds_batch() { vec![d.batch * d.seq, d.model] } else { vec![d.batch, d.seq, d.model] };
        let mut v = vec![i("x", tokens.clone(), t)];
        if self.backward {
            v.push(i("grad_y", tokens, t));
        }
        v.push(i("gate", vec![d.experts, d.model], t));
        if self.load_balance_coeff.is_some() {
            v.push(i("expert_bias", vec![d.experts], DType::F32));
        }
        v.push(i("w1", vec![d.experts, d.hidden, d.model], t));
        v.push(i("w2", vec![d.experts, d.model, d.hidden], t));
        v.push(i("w3", vec![d.experts, d.hidden, d.model], t));
        if let Some(fs) = d.shared_hidden {
            v.push(i("shared_w1", vec![fs, d.model], t));
            v.push(i("shared_w2", vec![d.model, fs], t));
            v.push(i("shared_w3", vec![fs, d.model], t));
        }
        v
    }

    /// The trainer's sequence divisor: (tp if sp) · (2·cp if cp > 1).
    pub fn seq_divisor(&self, c: &Common) -> usize {
        let (_, cp, tp) = Self::axes(c);
        (if self.parallel.sp { tp } else { 1 }) * (if cp > 1 { 2 * cp } else { 1 })
    }
}
