//! The router subject's spec: what a router case holds beyond the harness's envelope (the
//! `subject` object of a `shardfuzz.case/2` file, `kind` "router"): dims, router options,
//! layouts, the router revision and size-1 rule, and the optional backward pass. Field names are
//! fixed (docs/formats.md); every invalid value is reported with the path of its field.

use crate::backward::BackwardSpec;
use crate::{RouterConfig, RouterOptions, RouterRev, Size1};
use dtensor::DType;
use harness::case::{err, CaseError, Common};
use harness::limits::{check_sizes, TensorSize};
use harness::subject::InputSpec;
use placement::{Mesh, Placement, ReduceOp};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dims {
    pub batch: usize,
    pub seq: usize,
    pub model: usize,
    pub experts: usize,
    pub top_k: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    pub x: Vec<Placement>,
    pub gate: Vec<Placement>,
    pub expert_bias: Option<Vec<Placement>>,
    pub counts_contract: Vec<Placement>,
    /// The gate bias's placements: present exactly when `router.gate_bias` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_bias: Option<Vec<Placement>>,
}

/// The router code under test and the contract rule (the rule set is the envelope's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revision {
    pub router: RouterRev,
    pub size1: Size1,
}

/// A router case's subject.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterSpec {
    pub dims: Dims,
    pub router: RouterOptions,
    pub layout: Layout,
    pub revision: Revision,
    /// The backward pass at a torchtitan MoE boundary (docs/backward.md); absent or null for a
    /// forward-only case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backward: Option<BackwardSpec>,
}

impl RouterSpec {
    pub(crate) fn router_config(&self) -> Result<RouterConfig, CaseError> {
        RouterConfig::new(self.dims.experts, self.dims.top_k, self.router.clone()).map_err(|e| {
            let field = match e.field {
                "experts" | "top_k" => format!("dims.{}", e.field),
                f => format!("router.{f}"),
            };
            CaseError(format!("{field}: {}", e.message))
        })
    }

    /// The router's tensors for the size limits: x, the gate, and about four score-shaped
    /// tensors (a replicated layout puts all of them on each rank).
    fn sizes(&self) -> [(&'static str, &'static str, [usize; 3], u64); 3] {
        let d = &self.dims;
        [
            ("x", "batch·seq·model", [d.batch, d.seq, d.model], 1),
            ("gate", "experts·model", [d.experts, d.model, 1], 1),
            ("scores", "batch·seq·experts", [d.batch, d.seq, d.experts], 4),
        ]
    }

    /// Every check of the subject, after the envelope's.
    pub fn validate(&self, c: &Common, mesh: &Mesh) -> Result<(), CaseError> {
        let d = &self.dims;
        for (name, v) in [("batch", d.batch), ("seq", d.seq), ("model", d.model)] {
            if v == 0 {
                return err(format!("subject.dims.{name}: must be at least 1"));
            }
        }
        self.router_config().map_err(|e| CaseError(format!("subject.{}", e.0)))?;
        let sizes = self.sizes();
        let tensors: Vec<TensorSize> = sizes
            .iter()
            .map(|(what, formula, dims, copies)| TensorSize { what, formula, dims, copies: *copies })
            .collect();
        check_sizes(mesh.size(), &tensors).map_err(|e| CaseError(format!("subject.{e}")))?;
        self.validate_layout(mesh)?;
        self.validate_backward(c, mesh)
    }

    /// The inputs: x (B, L, D) and the gate (E, D) in the case dtype, the expert bias (E,) in
    /// float32, the gate bias (E,) in the case dtype, each when the router has it.
    pub fn inputs(&self, c: &Common) -> Vec<InputSpec> {
        let d = &self.dims;
        let mut v = vec![
            InputSpec { name: "x", shape: vec![d.batch, d.seq, d.model], dtype: c.dtype },
            InputSpec { name: "gate", shape: vec![d.experts, d.model], dtype: c.dtype },
        ];
        if self.router.expert_bias {
            v.push(InputSpec { name: "expert_bias", shape: vec![d.experts], dtype: DType::F32 });
        }
        if self.router.gate_bias {
            v.push(InputSpec { name: "gate_bias", shape: vec![d.experts], dtype: c.dtype });
        }
        v
    }

    fn validate_layout(&self, mesh: &Mesh) -> Result<(), CaseError> {
        let check = |field: &str, ps: &[Placement], ndim: usize, distributed: bool| -> Result<(), CaseError> {
            if ps.len() != mesh.ndim() {
                let (want, found) = (mesh.ndim(), ps.len());
                return err(format!(
                    "subject.layout.{field}: expected {want} placements (one per mesh dim), found {found}"
                ));
            }
            for (i, p) in ps.iter().enumerate() {
                p.normalized(ndim).map_err(|_| {
                    CaseError(format!("subject.layout.{field}[{i}]: {p} is out of range for a {ndim}-d tensor"))
                })?;
                if distributed && *p == Placement::Partial(ReduceOp::Product) {
                    // `Partial._partition_value`: "Replicate to Partial(product) conversion is not supported."
                    return err(format!(
                        "subject.layout.{field}[{i}]: {p} cannot be distributed (distribute_tensor partitions only sum, avg, max and min)"
                    ));
                }
                if matches!(p, Placement::StridedShard { .. }) {
                    return err(format!("subject.layout.{field}[{i}]: _StridedShard cannot be declared in a case"));
                }
            }
            // `assert_no_mixed_partial_types` (distribute_tensor, from_local): one reduce op per
            // placement list, sum with avg allowed.
            let mut ops: Vec<ReduceOp> = ps.iter().filter_map(|p| p.reduce_op()).collect();
            ops.sort_unstable();
            ops.dedup();
            if distributed && ops.len() > 1 && ops != [ReduceOp::Sum, ReduceOp::Avg] {
                let list = placement::short_list(ps);
                return err(format!(
                    "subject.layout.{field}: {list} mixes Partial reduce ops (distribute_tensor allows only sum with avg)"
                ));
            }
            Ok(())
        };
        check("x", &self.layout.x, 3, true)?;
        check("gate", &self.layout.gate, 2, true)?;
        check("counts_contract", &self.layout.counts_contract, 1, false)?;
        let optional = [
            ("expert_bias", &self.layout.expert_bias, self.router.expert_bias),
            ("gate_bias", &self.layout.gate_bias, self.router.gate_bias),
        ];
        for (name, ps, on) in optional {
            match (ps, on) {
                (Some(ps), true) => check(name, ps, 1, true)?,
                (None, false) => {}
                (Some(_), false) => {
                    return err(format!("subject.layout.{name}: must be null when router.{name} is false"))
                }
                (None, true) => {
                    return err(format!("subject.layout.{name}: placements are required when router.{name} is true"))
                }
            }
        }
        Ok(())
    }

    /// A backward case runs a boundary program on the TP axis: a 1-D mesh, the layouts the
    /// boundary gives the router, no force-balance override.
    fn validate_backward(&self, _c: &Common, mesh: &Mesh) -> Result<(), CaseError> {
        let Some(b) = &self.backward else { return Ok(()) };
        if mesh.ndim() != 1 {
            return err(format!("subject.backward: runs on a 1-D (TP) mesh, found {} mesh dims", mesh.ndim()));
        }
        b.validate(mesh.size()).map_err(|e| CaseError(format!("subject.{e}")))?;
        if self.router.force_load_balance {
            return err(
                "subject.backward: router.force_load_balance must be false (the override has no gradient path)",
            );
        }
        let want = [
            ("x", Some(&self.layout.x), b.router_input(), 3),
            ("gate", Some(&self.layout.gate), Placement::Replicate, 2),
            ("expert_bias", self.layout.expert_bias.as_ref(), Placement::Replicate, 1),
            ("gate_bias", self.layout.gate_bias.as_ref(), Placement::Replicate, 1),
            ("counts_contract", Some(&self.layout.counts_contract), b.counts_contract(), 1),
        ];
        for (name, ps, p, ndim) in want {
            let Some(ps) = ps else { continue };
            if ps[0].normalized(ndim).ok() != Some(p) {
                let (bnd, found) = (b.boundary, placement::short_list(ps));
                return err(format!("layout.{name}: {bnd} gives [{p}] in a backward case, found {found}"));
            }
        }
        Ok(())
    }
}
