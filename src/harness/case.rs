//! A case (`shardfuzz.case/1`): everything one differential run needs, as a JSON file that can
//! be replayed. Field names are fixed (docs/formats.md); unknown fields are errors,
//! and every invalid value is reported with the path of its field.

use super::tensor_data::TensorData;
use crate::device::Dev;
use crate::dtensor::DType;
use crate::placement::{Mesh, Placement, ReduceOp};
use crate::router::backward::BackwardSpec;
use crate::router::{Revision, RouterConfig, RouterOptions};
use serde::{Deserialize, Serialize};

pub const CASE_FORMAT: &str = "shardfuzz.case/1";
/// Most simulated ranks a case may ask for (the generator stays at 16).
pub use super::limits::MAX_RANKS;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshSpec {
    pub shape: Vec<usize>,
    pub names: Vec<String>,
}

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

crate::named_enum! {
    /// How input values are drawn from `data.seed`.
    pub enum Style("data style") {
        /// x ~ N(0,1), gate ~ N(0,1)/sqrt(D), bias ~ N(0,1)e-3.
        Normal = "normal",
        /// Pairs of identical gate rows and a zero bias: exact ties between experts.
        Ties = "ties",
        /// Logits in the hundreds: sigmoid saturates to 1.0 and softmax to one-hot.
        Saturated = "saturated",
        /// x scaled by 1e3: large but finite logits.
        Large = "large",
        /// Small integers (-2..=2) everywhere: exact arithmetic, many ties.
        SmallInt = "small_int",
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Data {
    pub seed: u64,
    pub style: Style,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tensors {
    pub x: TensorData,
    pub gate: TensorData,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expert_bias: Option<TensorData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_bias: Option<TensorData>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub format: String,
    pub mesh: MeshSpec,
    pub dims: Dims,
    pub router: RouterOptions,
    pub layout: Layout,
    pub revision: Revision,
    pub dtype: DType,
    pub device: Dev,
    pub data: Data,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tensors: Option<Tensors>,
    /// The backward pass at a torchtitan MoE boundary (docs/backward.md); absent or null for a
    /// forward-only case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backward: Option<BackwardSpec>,
}

/// An invalid case, with the path of the field at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CaseError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, CaseError> {
    Err(CaseError(msg.into()))
}

impl Case {
    /// Parses and validates a case from JSON text.
    pub fn from_json(text: &str) -> Result<Case, CaseError> {
        let c: Case = serde_json::from_str(text).map_err(|e| CaseError(format!("invalid case JSON: {e}")))?;
        c.validate()?;
        Ok(c)
    }

    /// The case as JSON that reads well by hand (compact arrays); values round-trip exactly.
    pub fn to_json(&self) -> String {
        super::json::pretty(self)
    }

    pub fn mesh(&self) -> Result<Mesh, CaseError> {
        Mesh::new(self.mesh.shape.clone(), self.mesh.names.clone()).map_err(|e| CaseError(format!("mesh: {e}")))
    }

    pub fn router_config(&self) -> Result<RouterConfig, CaseError> {
        RouterConfig::new(self.dims.experts, self.dims.top_k, self.router.clone()).map_err(|e| {
            let field = match e.field {
                "experts" | "top_k" => format!("dims.{}", e.field),
                f => format!("router.{f}"),
            };
            CaseError(format!("{field}: {}", e.message))
        })
    }

    pub fn ranks(&self) -> usize {
        self.mesh.shape.iter().product()
    }

    /// Every check a case must pass before anything runs.
    pub fn validate(&self) -> Result<(), CaseError> {
        if self.format != CASE_FORMAT {
            return err(format!("format: expected \"{CASE_FORMAT}\", found \"{}\"", self.format));
        }
        let mesh = self.validate_mesh()?;
        let d = &self.dims;
        for (name, v) in [("batch", d.batch), ("seq", d.seq), ("model", d.model)] {
            if v == 0 {
                return err(format!("dims.{name}: must be at least 1"));
            }
        }
        self.router_config()?;
        super::limits::check_case(mesh.size(), d.batch, d.seq, d.model, d.experts).map_err(CaseError)?;
        if !matches!(self.dtype, DType::F32 | DType::BF16 | DType::F16) {
            return err(format!("dtype: expected f32, bf16 or f16, found {}", self.dtype));
        }
        self.validate_layout(&mesh)?;
        if let Some(t) = &self.tensors {
            self.validate_tensors(t)?;
        }
        self.validate_backward(&mesh)
    }

    fn validate_mesh(&self) -> Result<Mesh, CaseError> {
        if self.mesh.shape.is_empty() || self.mesh.shape.len() > 3 {
            return err(format!("mesh.shape: 1 to 3 mesh dims, found {}", self.mesh.shape.len()));
        }
        // Before the mesh is built: its rank tables are as large as the product.
        match super::limits::product(&self.mesh.shape) {
            Some(n) if n <= MAX_RANKS as u64 => self.mesh(),
            Some(n) => err(format!("mesh.shape: {n} ranks is more than the {MAX_RANKS} simulated ranks allowed")),
            None => {
                err(format!("mesh.shape: {:?} is more than the {MAX_RANKS} simulated ranks allowed", self.mesh.shape))
            }
        }
    }

    fn validate_layout(&self, mesh: &Mesh) -> Result<(), CaseError> {
        let check = |field: &str, ps: &[Placement], ndim: usize, distributed: bool| -> Result<(), CaseError> {
            if ps.len() != mesh.ndim() {
                let (want, found) = (mesh.ndim(), ps.len());
                return err(format!("layout.{field}: expected {want} placements (one per mesh dim), found {found}"));
            }
            for (i, p) in ps.iter().enumerate() {
                p.normalized(ndim).map_err(|_| {
                    CaseError(format!("layout.{field}[{i}]: {p} is out of range for a {ndim}-d tensor"))
                })?;
                if distributed && *p == Placement::Partial(ReduceOp::Product) {
                    // `Partial._partition_value`: "Replicate to Partial(product) conversion is not supported."
                    return err(format!(
                        "layout.{field}[{i}]: {p} cannot be distributed (distribute_tensor partitions only sum, avg, max and min)"
                    ));
                }
                if matches!(p, Placement::StridedShard { .. }) {
                    return err(format!("layout.{field}[{i}]: _StridedShard cannot be declared in a case"));
                }
            }
            // `assert_no_mixed_partial_types` (distribute_tensor, from_local): one reduce op per
            // placement list, sum with avg allowed.
            let mut ops: Vec<ReduceOp> = ps.iter().filter_map(|p| p.reduce_op()).collect();
            ops.sort_unstable();
            ops.dedup();
            if distributed && ops.len() > 1 && ops != [ReduceOp::Sum, ReduceOp::Avg] {
                let list = crate::placement::short_list(ps);
                return err(format!(
                    "layout.{field}: {list} mixes Partial reduce ops (distribute_tensor allows only sum with avg)"
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
                (Some(_), false) => return err(format!("layout.{name}: must be null when router.{name} is false")),
                (None, true) => {
                    return err(format!("layout.{name}: placements are required when router.{name} is true"))
                }
            }
        }
        Ok(())
    }

    fn validate_tensors(&self, t: &Tensors) -> Result<(), CaseError> {
        let d = &self.dims;
        let want = |name: &str, td: &TensorData, shape: &[usize], dtype: DType| -> Result<(), CaseError> {
            if td.shape != shape {
                return err(format!("tensors.{name}.shape: expected {shape:?} from dims, found {:?}", td.shape));
            }
            if td.dtype != dtype {
                return err(format!("tensors.{name}.dtype: expected {dtype}, found {}", td.dtype));
            }
            td.validate(&format!("tensors.{name}")).map_err(CaseError)
        };
        want("x", &t.x, &[d.batch, d.seq, d.model], self.dtype)?;
        want("gate", &t.gate, &[d.experts, d.model], self.dtype)?;
        let optional = [
            ("expert_bias", &t.expert_bias, self.router.expert_bias, DType::F32),
            ("gate_bias", &t.gate_bias, self.router.gate_bias, self.dtype),
        ];
        for (name, td, on, dtype) in optional {
            match (td, on) {
                (Some(b), true) => want(name, b, &[d.experts], dtype)?,
                (None, false) => {}
                (Some(_), false) => return err(format!("tensors.{name}: present but router.{name} is false")),
                (None, true) => return err(format!("tensors.{name}: missing while router.{name} is true")),
            }
        }
        Ok(())
    }

    /// A backward case runs a boundary program on the TP axis: a 1-D mesh, the layouts the
    /// boundary gives the router, no force-balance override.
    fn validate_backward(&self, mesh: &Mesh) -> Result<(), CaseError> {
        let Some(b) = &self.backward else { return Ok(()) };
        if mesh.ndim() != 1 {
            return err(format!("backward: runs on a 1-D (TP) mesh, found {} mesh dims", mesh.ndim()));
        }
        b.validate(mesh.size()).map_err(CaseError)?;
        if self.router.force_load_balance {
            return err("backward: router.force_load_balance must be false (the override has no gradient path)");
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
                let (bnd, found) = (b.boundary, crate::placement::short_list(ps));
                return err(format!("layout.{name}: {bnd} gives [{p}] in a backward case, found {found}"));
            }
        }
        Ok(())
    }
}
