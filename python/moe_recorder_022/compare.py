"""Print, per recorded 0.2.2 case, which outputs differ from the unsharded layer and by how much.

Run: python python/moe_recorder_022/compare.py tests/pytorch/moe-0.2.2/tt-0.2.2-dtensor_hooks-1.jsonl
"""
import json
import sys


def largest_difference(a, b):
    return round(max((abs(x - y) for x, y in zip(a, b)), default=0.0), 6)


def describe(record):
    s = record["case"]["subject"]
    dims, outcome, reference = s["dims"], record["outcome"], record["reference"]
    line = (
        f"{record['id']} B{dims['batch']} L{dims['seq']} E{dims['experts']} K{dims['top_k']} "
        f"ep{s['parallel']['ep']} {s['router']['score_func']} norm={s['router']['route_norm']} ok={outcome['ok']}"
    )
    if not (outcome["ok"] and reference["ok"]):
        return f"{line} {str(outcome.get('error'))[:200]}"
    diffs = {
        name: largest_difference(outcome["outputs"][name]["value"]["values"], ref["values"])
        for name, ref in reference["outputs"].items()
    }
    # The gate is labelled Replicate: its two ranks' copies should be equal.
    gate = outcome["outputs"]["grad.gate"]["locals"]
    diffs["gate_rank_diff"] = largest_difference(gate[0]["values"], gate[1]["values"])
    return f"{line} {diffs}"


def main(path):
    with open(path) as f:
        for text in f:
            print(describe(json.loads(text)))


if __name__ == "__main__":
    main(sys.argv[1])
