"""`python -m shardfuzz_worker [--engine auto|local|gloo] [REQUEST.json ...]`

With files: runs each request (`{"case": ..., "tables": ...}`, as shardfuzz sends them) and prints
one outcome line per file.
Without: the JSON-lines loop shardfuzz drives (serve.py): a `{"ready": ...}` line, then one outcome
line per request line."""

import argparse
import json
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main():
    ap = argparse.ArgumentParser(prog="python -m shardfuzz_worker", description=__doc__.split("\n\n")[1])
    ap.add_argument("files", nargs="*", help="request files (none: serve JSON lines on stdin)")
    ap.add_argument("--engine", default="auto", choices=["auto", "local", "gloo"])
    args = ap.parse_args()
    from . import serve
    if not args.files:
        serve.main()
        return
    for path in args.files:
        with open(path) as f:
            doc = json.load(f)
        print(json.dumps(serve.handle(dict(doc, engine=args.engine))), flush=True)


if __name__ == "__main__":
    sys.exit(main())
