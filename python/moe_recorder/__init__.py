"""Recorder of the real torchtitan MoE layer (shardfuzz's `moe` subject): cases in, outcomes out.

The driver (`python -m moe_recorder`) needs only the standard library; it runs the ranks with the
python of a venv that has torch, torchtitan and spmd_types (`--python`)."""
