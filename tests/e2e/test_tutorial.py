#!/usr/bin/env python3
"""Runs every command of docs/tutorial.md and compares its output with the
output the tutorial shows.

    python3 tests/e2e/test_tutorial.py BUILD_DIR SOURCE_DIR

The same as `test_docs_run.py BUILD_DIR SOURCE_DIR docs/tutorial.md`: the
rules (commands, "..." lines, timings, skipped commands) are in
tests/e2e/test_docs_run.py. The tutorial's commands run from SOURCE_DIR.
"""

import os
import sys

sys.dont_write_bytecode = True  # nothing written into the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_docs_run  # noqa: E402


def main(argv):
    if len(argv) != 3:
        print("usage: test_tutorial.py BUILD_DIR SOURCE_DIR", file=sys.stderr)
        return 2
    return test_docs_run.main([argv[0], argv[1], argv[2], "docs/tutorial.md"])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
