"""The probes use the fact-check harness of docs/pytorch-checks/_common.py (one-process fake
process group + LocalTensorMode, or gloo ranks; caches cleared per case). This module loads that
file and re-exports everything in it, so the probes keep `from _common import ...`."""

import importlib.util
import os

_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "docs", "pytorch-checks", "_common.py")
_spec = importlib.util.spec_from_file_location("_shardfuzz_checks_common", _path)
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
globals().update({k: v for k, v in vars(_mod).items() if not k.startswith("__")})
