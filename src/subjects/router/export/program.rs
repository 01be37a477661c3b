//! The router of a case as Python, written out for its options and its revision's scatter sites
//! (what `python/shardfuzz_worker/router.py` runs, without the branches this case does not take).

use crate::body::Site;
use crate::sharded::sites;
use crate::spec::RouterSpec;
use harness::case::Common;

/// How a revision writes one scatter site: (statement lines, comment).
fn scatter(how: Site, var: &str, index: &str, value: &str, like: &str) -> Vec<String> {
    match how {
        Site::InPlace => {
            vec![format!("{var}.scatter_(-1, {index}, {value})  # in place on the DTensor (torchtitan#3515)")]
        }
        Site::OutOfPlace => {
            vec![format!("{var} = {var}.scatter(-1, {index}, {value})  # out of place (torchtitan#3753)")]
        }
        Site::LocalMap => vec![format!(
            "{var} = scatter_in_local_map({var}, {index}, {value}, like={like})  # under local_map (torchtitan#3753)"
        )],
    }
}

const LOCAL_MAP_HELPER: &str = "def scatter_in_local_map(t, index, value, like):
    \"\"\"`t.scatter_(-1, index, value)` inside local_map, placements taken from the live DTensors.\"\"\"
    if not isinstance(t, DTensor):  # the reference: plain tensors
        return t.scatter_(-1, index, value)
    index_placements = index.placements if isinstance(index, DTensor) else None  # None: a plain tensor
    fn = local_map(lambda t, i: t.scatter_(-1, i, value), out_placements=(like.placements,),
                   in_placements=(like.placements, index_placements), device_mesh=like.device_mesh)
    return fn(t, index)


";

/// The lines computing `scores_for_choice` and, with groups, the group mask.
fn choice(s: &RouterSpec, site1: Site, body: &mut Vec<String>) {
    let r = &s.router;
    body.push(if r.expert_bias {
        "scores_for_choice = scores + expert_bias".into()
    } else {
        "scores_for_choice = scores".into()
    });
    if let Some(g) = r.groups {
        body.push(format!(
            "# node-limited routing: keep the {} of {} groups whose top-2 scores sum highest",
            g.num_limited, g.num_groups
        ));
        body.extend(group_choice(g.num_groups, g.num_limited));
        body.push("with site(\"group_mask\"):".into());
        body.push("    group_mask = torch.ones_like(group_scores, dtype=torch.bool)".into());
        for l in scatter(site1, "group_mask", "kept", "False", "group_mask") {
            body.push(format!("    {l}"));
        }
        body.push(
            "scores_for_choice = scores_grouped.masked_fill(group_mask.unsqueeze(-1), float(\"-inf\")).flatten(-2)"
                .into(),
        );
    }
}

/// `def router(...)`: the router of this case, on plain tensors or DTensors alike.
pub fn router(_c: &Common, s: &RouterSpec) -> String {
    let r = &s.router;
    let (site1, site2) = sites(s.revision.router);
    let mut args = vec!["x", "gate_weight"];
    if r.gate_bias {
        args.push("gate_bias");
    }
    if r.expert_bias {
        args.push("expert_bias");
    }
    let mut body: Vec<String> = Vec::new();
    let bias = if r.gate_bias { ", gate_bias.float()" } else { "" };
    body.push(format!("scores = F.linear(x.float(), gate_weight.float(){bias})  # the gate, in float32"));
    body.push(match r.score_func.to_string().as_str() {
        "sigmoid" => "scores = torch.sigmoid(scores)".into(),
        _ => "scores = F.softmax(scores, dim=-1)".into(),
    });
    choice(s, site1, &mut body);
    body.push("topk_ids = torch.topk(scores_for_choice, k=K, dim=-1, sorted=False).indices".into());
    body.push("topk_scores = scores.gather(dim=-1, index=topk_ids)".into());
    if r.force_load_balance {
        body.push("# torchtitan's debug override: round-robin experts, a plain tensor meeting DTensor scores".into());
        body.push("topk_ids = torch.arange(B * L * K).reshape(B, L, K) % E".into());
        body.push("topk_scores = scores.gather(-1, topk_ids)".into());
    }
    if r.route_norm {
        body.push("topk_scores = topk_scores / (topk_scores.sum(dim=-1, keepdim=True) + 1e-20)".into());
    }
    body.push(format!("topk_scores = topk_scores * {:?}  # route_scale", r.route_scale));
    body.push("with site(\"routing_map\"):".into());
    body.push("    routing_map = torch.zeros_like(scores, dtype=torch.bool)".into());
    for l in scatter(site2, "routing_map", "topk_ids", "True", "scores") {
        body.push(format!("    {l}"));
    }
    body.push("counts = routing_map.sum(dim=(0, 1))  # tokens per expert".into());
    let mut outs = vec!["topk_scores", "topk_ids", "scores", "routing_map", "counts"];
    if r.groups.is_some() {
        outs.push("group_mask");
    }
    body.push(format!("return {{{}}}", outs.iter().map(|o| format!("\"{o}\": {o}")).collect::<Vec<_>>().join(", ")));
    let helper =
        if site1 == Site::LocalMap && r.groups.is_some() || site2 == Site::LocalMap { LOCAL_MAP_HELPER } else { "" };
    format!(
        "{helper}def router({}):\n    \"\"\"torchtitan's TokenChoiceTopKRouter.forward and the routing part of MoE.forward, \
         revision {}.\"\"\"\n{}\n",
        args.join(", "),
        s.revision.router,
        body.iter().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
    )
}

/// The node-limited routing's choice of groups (the forward and backward programs share it):
/// keep the `limited` of `groups` groups whose top-2 scores sum highest.
pub(crate) fn group_choice(groups: usize, limited: usize) -> [String; 3] {
    [
        format!("scores_grouped = scores_for_choice.unflatten(-1, ({groups}, E // {groups}))"),
        "group_scores = scores_grouped.topk(2, dim=-1).values.sum(dim=-1)".into(),
        format!("kept = torch.topk(group_scores, k={limited}, dim=-1, sorted=False).indices"),
    ]
}
