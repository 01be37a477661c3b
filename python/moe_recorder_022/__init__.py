"""The torchtitan 0.2.2 MoE recorder (record.py: the recorded outcomes; python -m moe_recorder_022: confirm)."""
