//! Python literals for the scripts subjects export (`shardfuzz export --pytorch`): placements,
//! floats that read back exactly, tensors, lists and tuples.

use crate::tensor_data::{TensorData, Values};
use placement::Placement;

/// Python for a placement: `Shard(1)`, `Replicate()`, `Partial("avg")`.
pub fn placement(p: &Placement) -> String {
    match p {
        Placement::Replicate => "Replicate()".into(),
        Placement::Shard(d) => format!("Shard({d})"),
        Placement::StridedShard { dim, sf } => format!("_StridedShard({dim}, split_factor={sf})"),
        Placement::Partial(op) if op.name() == "sum" => "Partial()".into(),
        Placement::Partial(op) => format!("Partial(\"{op}\")"),
        Placement::MaskPartial { .. } => "Partial()".into(),
    }
}

pub fn placements(ps: &[Placement]) -> String {
    format!("[{}]", ps.iter().map(placement).collect::<Vec<_>>().join(", "))
}

/// A float as Python reads it back exactly (at float32 precision).
pub fn float(v: f64) -> String {
    match v {
        v if v.is_nan() => "math.nan".into(),
        v if v.is_infinite() => if v > 0.0 { "math.inf" } else { "-math.inf" }.into(),
        v => format!("{:?}", v as f32),
    }
}

/// `torch.tensor([...]).reshape(...)` in the tensor's dtype, values wrapped at 100 columns.
pub fn tensor(t: &TensorData, indent: &str) -> String {
    let vals: Vec<String> = match &t.values {
        Values::Float(v) => v.iter().map(|&x| float(x)).collect(),
        Values::Int(v) => v.iter().map(|x| x.to_string()).collect(),
        Values::Bool(v) => v.iter().map(|&b| if b { "True" } else { "False" }.to_string()).collect(),
    };
    let mut lines = vec![String::new()];
    for v in vals {
        if lines.last().is_some_and(|l| l.len() + v.len() > 88) {
            lines.push(String::new());
        }
        let l = lines.last_mut().expect("one line at least");
        l.push_str(&v);
        l.push_str(", ");
    }
    let body = lines.iter().map(|l| format!("{indent}    {}", l.trim_end())).collect::<Vec<_>>().join("\n");
    let shape = t.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ");
    let dtype = match t.dtype.name() {
        "bf16" => ".to(torch.bfloat16)",
        "f16" => ".to(torch.float16)",
        _ => "",
    };
    format!("torch.tensor([\n{body}\n{indent}], dtype=torch.float32).reshape({shape}){dtype}")
}

/// A Python list of string literals.
pub fn quoted(v: &[String]) -> String {
    format!("[{}]", v.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", "))
}

/// A Python tuple of already-written items (one item keeps its comma).
pub fn tuple(items: &[String]) -> String {
    if items.len() == 1 {
        format!("({},)", items[0])
    } else {
        format!("({})", items.join(", "))
    }
}
