"""shardfuzz's real-PyTorch worker: runs shardfuzz cases (shardfuzz.case/1) on real DTensor and
answers with what PyTorch did (shardfuzz.outcome/1). `python -m shardfuzz_worker --help`.

Modules: `common` (placements, tensors, JSON values), `router` (the router revisions, forward),
`boundary` (the backward cases' boundary programs and loss), `commlog` (the collectives real
DTensor issues, labelled with the router value being computed), `local_engine` (one process, fake
process group + LocalTensorMode), `gloo_engine` (one gloo process per rank), `serve` (the JSON-lines
loop). Only `torch` is needed (numpy is not).
"""
