"""python -m moe_recorder_022: the confirm entry (moe_recorder_022.confirm; its rank function must
live in an importable module for torch.multiprocessing's spawn)."""
import sys

from moe_recorder_022.confirm import main

sys.exit(main())
