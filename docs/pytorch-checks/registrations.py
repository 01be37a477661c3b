#!/usr/bin/env python3
"""registrations.py: DTensor's sharding-rule registration table of a torch release, and its diff.

    python registrations.py dump OUT.json          # with the release's interpreter
    python3 registrations.py diff A.json B.json     # any python

`dump` writes, per aten op, how DTensor's sharding propagator knows it: the single-dim strategy
(with its flags: uneven / unbacked sharding, filters), the full-mesh strategy function, a rule,
the schema info (which arguments key the propagation cache) and a decomposition. `diff` prints the
ops whose entry differs between two dumps: the first thing to read when a release comes out (an op
whose entry and source file are unchanged behaves as before). Function addresses are dropped, so
two dumps of the same release are equal.
"""
import json
import re
import sys


def dump(path):
    from torch.distributed.tensor import DTensor

    prop = DTensor._op_dispatcher.sharding_propagator
    table = {}
    for attr in ("op_single_dim_strategy_funcs", "op_strategy_funcs", "op_to_rules", "op_to_schema_info",
                 "op_decomposition_funcs"):
        for op, v in (getattr(prop, attr, None) or {}).items():
            name = getattr(v, "__name__", None) or re.sub(r" at 0x[0-9a-f]+", "", repr(v))
            table.setdefault(str(op), {})[attr] = name
    with open(path, "w") as f:
        json.dump(table, f, indent=0, sort_keys=True)
    import torch

    print(f"torch {torch.__version__}: {len(table)} ops -> {path}")


def diff(a_path, b_path):
    a, b = json.load(open(a_path)), json.load(open(b_path))
    changed = [op for op in sorted(set(a) | set(b)) if a.get(op) != b.get(op)]
    for op in changed:
        print(f"{op}\n  - {a.get(op)}\n  + {b.get(op)}")
    print(f"{len(changed)} of {len(set(a) | set(b))} ops differ")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "dump":
        dump(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "diff":
        diff(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
