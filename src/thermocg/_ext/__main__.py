"""python -m thermocg._ext: build (or load) the compiled kernels now and say where they are.

Exits 0 even when they cannot be built (thermocg then uses its PyTorch paths); ``--require`` makes
that an error (exit 1).
"""

import argparse
import json
import sys

from thermocg._ext import build_info, hipnn_ops


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m thermocg._ext", description=__doc__)
    parser.add_argument("--require", action="store_true", help="exit 1 if the kernels are unavailable")
    parser.add_argument("--verbose", action="store_true", help="show the compiler's output")
    args = parser.parse_args()
    hipnn_ops(warn=False, verbose=args.verbose)
    info = build_info()
    print(json.dumps(info, indent=1))
    if not info["available"]:
        reason = "disabled by THERMOCG_NO_EXTENSION" if info["disabled"] else info["error"]
        print(f"thermocg: compiled kernels unavailable ({reason}); the PyTorch paths will be used",
              file=sys.stderr)
        return 1 if args.require else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
