//! The backward part of an exported script: the loss weights inline, the router body (`route`)
//! and the boundary revision's program from the MoE input to the loss, written out for this
//! boundary (what `python/shardfuzz_worker/boundary.py` runs for it).

use crate::backward::{loss, BackwardSpec, Boundary};
use crate::body::Site;
use crate::spec::RouterSpec;
use harness::case::Common;
use harness::pyfmt::tensor;
use harness::tensor_data::{TensorData, Values};

pub(crate) const HARNESS: &str = include_str!("../../../../python/export/backward.py");

/// torchtitan's reorderer's refusal (the one text: `loss::UNEVEN_SPLIT`).
const UNEVEN: &str = loss::UNEVEN_SPLIT;

fn weights(v: Vec<f32>, t: usize, e: usize) -> String {
    let data = TensorData {
        shape: vec![t, e],
        dtype: dtensor::DType::F32,
        values: Values::Float(v.into_iter().map(f64::from).collect()),
    };
    tensor(&data, "    ")
}

/// BACKWARD, the loss class, V and every rank's share of it.
fn constants(c: &Common, s: &RouterSpec, b: &BackwardSpec) -> String {
    let n = c.ranks();
    let (t, e) = (s.dims.batch * s.dims.seq, s.dims.experts);
    let class = loss::class(b, n);
    let class_name = class.name();
    let uneven = class == loss::LossClass::Tokensplit && t % n != 0;
    let ranks = if uneven {
        "None  # an uneven token split: torchtitan's reorderer raises".to_string()
    } else {
        let per: Vec<String> =
            (0..n).map(|r| weights(loss::rank_weights(b.loss_seed, t, e, n, class, r), t, e)).collect();
        format!("[\n    {},\n]", per.join(",\n    "))
    };
    format!(
        "BACKWARD = {{\"boundary\": \"{}\", \"ep\": {}, \"etp\": {}, \"score_before_experts\": {}, \"sp\": {}}}\n\
         LOSS_CLASS = \"{class_name}\"  # how the experts consume the gate values (docs/backward.md, \"The loss\")\n\
         # The loss: sum over ranks r, tokens t, choices k of ts_r[t, k] * V_r[t, ids_r[t, k]], sum_r V_r = V\n\
         V = {}\nV_RANK = {ranks}\n",
        b.boundary,
        py_bool(b.ep),
        b.etp,
        py_bool(b.score_before_experts),
        py_bool(b.sp),
        weights(loss::v(b.loss_seed, t, e), t, e),
    )
}

fn py_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

/// `def route(logits, expert_bias)`: the router body on the gate's logits.
fn route(s: &RouterSpec) -> String {
    let r = &s.router;
    let mut body = vec![match r.score_func.to_string().as_str() {
        "sigmoid" => "scores = torch.sigmoid(logits)".to_string(),
        _ => "scores = F.softmax(logits, dim=-1)".to_string(),
    }];
    // The group-mask site as this revision writes it (the one table: `sharded::sites`).
    let site = match crate::sharded::sites(s.revision.router).0 {
        Site::LocalMap => "scatter_in_local_map(group_mask, kept, False, like=group_mask)",
        Site::OutOfPlace => "group_mask.scatter(-1, kept, False)",
        Site::InPlace => "group_mask.scatter_(-1, kept, False)",
    };
    body.push(
        if r.expert_bias { "scores_for_choice = scores + expert_bias" } else { "scores_for_choice = scores" }.into(),
    );
    if let Some(g) = r.groups {
        body.extend(super::program::group_choice(g.num_groups, g.num_limited));
        body.push("group_mask = torch.ones_like(group_scores, dtype=torch.bool)".into());
        body.push(format!("group_mask = {site}"));
        body.push(
            "scores_for_choice = scores_grouped.masked_fill(group_mask.unsqueeze(-1), float(\"-inf\")).flatten(-2)"
                .into(),
        );
    }
    body.push("topk_ids = torch.topk(scores_for_choice, k=K, dim=-1, sorted=False).indices".into());
    body.push("topk_scores = scores.gather(dim=-1, index=topk_ids)".into());
    if r.route_norm {
        body.push("topk_scores = topk_scores / (topk_scores.sum(dim=-1, keepdim=True) + 1e-20)".into());
    }
    body.push(format!("return topk_scores * {:?}, topk_ids  # route_scale", r.route_scale));
    format!(
        "def route(logits, expert_bias=None):\n    \"\"\"The router body on the gate's logits (plain tensors or DTensors): gate values, expert ids.\"\"\"\n{}\n",
        body.iter().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
    )
}

fn gate(input: &str, s: &RouterSpec) -> String {
    let bias = if s.router.gate_bias { ", gate_bias.float()" } else { "" };
    format!("logits = F.linear({input}.float(), gate_weight.float(){bias})  # the gate, in float32")
}

/// The program of the boundaries that route on local tensors.
fn local_route(c: &Common, s: &RouterSpec, b: &BackwardSpec, body: &mut Vec<String>) {
    body.push("x = x_in.redistribute(mesh, [Replicate()], async_op=True)  # moe.input".into());
    if b.boundary == Boundary::T3192 {
        body.push(gate("x.view(B * L, D)", s));
    } else {
        body.push(if b.boundary == Boundary::T2416 {
            "xl = x.to_local(grad_placements=[Partial()])  # moe.to_local: gradient label P".into()
        } else {
            "xl = x.to_local()  # moe.to_local: gradient label R".into()
        });
        body.push(
            "xg = DTensor.from_local(xl.view(B * L, D), mesh, [Replicate()], run_check=False)  # gate.from_local"
                .into(),
        );
        body.push(gate("xg", s));
    }
    body.push(if b.boundary == Boundary::Pre2416 {
        "sl = logits.to_local()  # gate.to_local: gradient label R (torchtitan#2387)".into()
    } else {
        "sl = logits.to_local(grad_placements=[Partial()])  # gate.to_local: gradient label P".into()
    });
    body.push("topk_scores, topk_ids = route(sl, expert_bias)  # on local tensors".into());
    if loss::class(b, c.ranks()) == loss::LossClass::Tokensplit
        && !(s.dims.batch * s.dims.seq).is_multiple_of(c.ranks())
    {
        body.push(format!("raise ValueError(\"{UNEVEN}\")  # torchtitan's token reorderer"));
    } else {
        body.push("return local_loss(topk_scores, topk_ids, torch.arange(B * L), V_r), topk_ids".into());
    }
}

/// The program of the boundaries that route on DTensors.
fn dtensor_route(s: &RouterSpec, b: &BackwardSpec, body: &mut Vec<String>) {
    let eb = if s.router.expert_bias {
        "DTensor.from_local(expert_bias, mesh, [Replicate()], run_check=False)"
    } else {
        "None"
    };
    if b.boundary == Boundary::T3192 {
        body.push("xv = x_in.view(B * L, D)".into());
        body.push("if xv.placements != (Shard(0),):  # the gate's SequenceParallel input style (gate.input)".into());
        body.push("    xv = xv.redistribute(placements=[Shard(0)], async_op=True)".into());
        body.push(gate("xv", s));
        body.push(format!("topk_scores, topk_ids = route(logits, {eb})"));
        body.push("tokens = tokens_under(topk_scores.placements, (B * L,), mesh)".into());
        body.push("# the experts take the local gate values (experts.to_local, default label)".into());
        body.push("return local_loss(topk_scores.to_local(), topk_ids.to_local(), tokens, V_r), topk_ids".into());
        return;
    }
    let dst = if b.ep { "[Shard(1)]" } else { "[Replicate()]" };
    let in_grad = match (b.ep, b.boundary) {
        (true, _) => "([Shard(1)], [Shard(1)])",
        (false, Boundary::Clean) => "([Partial()], [Partial()])",
        _ => "None",
    };
    body.push(format!("x = x_in.redistribute(mesh, {dst}, async_op=True)  # router.input"));
    body.push(gate("x", s));
    body.push(format!("topk_scores, topk_ids = route(logits, {eb})"));
    body.push(format!("in_dst = {dst}  # the experts' input layout: local_map moves its inputs there"));
    body.push("if topk_scores.placements != tuple(in_dst):".into());
    body.push("    topk_scores = topk_scores.redistribute(placements=in_dst)".into());
    body.push("if topk_ids.placements != tuple(in_dst):".into());
    body.push("    topk_ids = topk_ids.redistribute(placements=in_dst)".into());
    body.push("tokens = tokens_under(in_dst, (B, L), mesh)".into());
    if in_grad == "None" {
        body.push("# no in_grad_placements: the inputs' to_local() labels their gradients R (torchtitan#4054)".into());
    }
    body.push(
        "experts = local_map(lambda ts, ids: local_loss(ts, ids, tokens, V_r), out_placements=[Partial()],".into(),
    );
    body.push("                    in_placements=(in_dst, in_dst), device_mesh=mesh,".into());
    body.push(format!("                    in_grad_placements={in_grad})  # experts.local_map"));
    body.push("return experts(topk_scores, topk_ids).to_local(), topk_ids".into());
}

/// The constants, `route` and `program` of a backward case.
pub fn program(c: &Common, s: &RouterSpec, b: &BackwardSpec) -> String {
    let mut body = Vec::new();
    if b.boundary.local_router(b.ep) {
        local_route(c, s, b, &mut body);
    } else {
        dtensor_route(s, b, &mut body);
    }
    format!(
        "{}\n\n{}\n\ndef program(x_in, gate_weight, gate_bias, expert_bias, mesh, V_r):\n    \"\"\"Boundary revision {}: \
         the MoE input (a DTensor leaf) through the gate and router to this rank's loss; returns (loss, ids).\"\"\"\n{}\n",
        constants(c, s, b),
        route(s),
        b.boundary,
        body.iter().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
    )
}
