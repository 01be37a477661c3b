//! The routing step that consumes the router (torchtitan's local token reorder): a stable
//! argsort of the ids by expert, per-expert offsets from the cumulative counts, and the token
//! order within each expert. The sharded side runs it on each rank's local tensors, as
//! GroupedExperts does inside its local_map, so counts whose placement does not match the ids'
//! (global counts next to local tokens) show up as offsets that do not fit the rank's tokens.

use dtensor::DTensor;
use tch::{Kind, Tensor};

/// Offsets (cumulative counts) and, per routed slot in expert order, the token it came from.
pub struct Dispatch {
    pub offsets: Vec<i64>,
    pub token_order: Vec<i64>,
    pub sorted_ids: Vec<i64>,
}

/// Reorders `ids` (any shape, last dim K) by expert with a stable sort.
pub fn dispatch(ids: &Tensor, counts: &Tensor) -> Dispatch {
    let k = *ids.size().last().unwrap_or(&1);
    let flat = ids.reshape([-1]).to_kind(Kind::Int64);
    let (sorted, perm) = flat.sort_stable(true, 0, false);
    let token_order = perm.divide_scalar_mode(k, "floor");
    let offsets = counts.to_kind(Kind::Int64).cumsum(0, Kind::Int64);
    let v =
        |t: &Tensor| Vec::<i64>::try_from(t.to_device(tch::Device::Cpu).contiguous().view(-1)).expect("int64 values");
    Dispatch { offsets: v(&offsets), token_order: v(&token_order), sorted_ids: v(&sorted) }
}

/// What [`local_consistency`] needs of [`dispatch`] (the sorted ids and the offsets), on
/// plain values: an oracle runs it on every rank of every case.
fn sorted_and_offsets(ids: &Tensor, counts: &Tensor) -> Dispatch {
    if counts.dim() != 1 {
        return dispatch(ids, counts);
    }
    let v = |t: &Tensor| Vec::<i64>::try_from(t.to_device(tch::Device::Cpu).to_kind(Kind::Int64).contiguous().view(-1));
    let mut sorted_ids = v(ids).expect("int64 values");
    sorted_ids.sort_unstable();
    let mut sum = 0i64;
    let offsets = v(counts)
        .expect("int64 values")
        .into_iter()
        .map(|c| {
            sum = sum.wrapping_add(c);
            sum
        })
        .collect();
    Dispatch { offsets, token_order: Vec::new(), sorted_ids }
}

/// Checks, on every rank, that the local counts describe the local ids: the offsets end at the
/// number of routed slots the rank holds, and each expert's segment holds only that expert.
/// Returns one message per inconsistent rank.
pub(crate) fn local_consistency(ids: &DTensor, counts: &DTensor) -> Vec<String> {
    let mut bad = Vec::new();
    for r in 0..ids.locals.len() {
        let d = sorted_and_offsets(&ids.locals[r], &counts.locals[r]);
        let slots = d.sorted_ids.len() as i64;
        let end = d.offsets.last().copied().unwrap_or(0);
        if end != slots {
            bad.push(format!("rank {r}: offsets from its counts end at {end}, but it holds {slots} routed slots"));
            continue;
        }
        let mut start = 0usize;
        for (e, &stop) in d.offsets.iter().enumerate() {
            let seg = &d.sorted_ids[start..stop as usize];
            if let Some(x) = seg.iter().find(|&&x| x != e as i64) {
                bad.push(format!("rank {r}: expert {e}'s segment holds expert {x}"));
                break;
            }
            start = stop as usize;
        }
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatch_orders_tokens_by_expert_stably() {
        let ids = Tensor::from_slice(&[2i64, 0, 0, 1, 2, 0]).view([3, 2]); // 3 tokens, K=2
        let counts = Tensor::from_slice(&[3i64, 1, 2]);
        let d = dispatch(&ids, &counts);
        assert_eq!(d.sorted_ids, vec![0, 0, 0, 1, 2, 2]);
        assert_eq!(d.offsets, vec![3, 4, 6]);
        // Within expert 0: slots 1, 2, 5 -> tokens 0, 1, 2 in token order.
        assert_eq!(d.token_order, vec![0, 1, 2, 1, 0, 2]);
        let p = sorted_and_offsets(&ids, &counts);
        assert_eq!((p.sorted_ids, p.offsets), (d.sorted_ids, d.offsets));
    }
}
