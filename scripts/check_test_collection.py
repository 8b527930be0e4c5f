"""Fail when a ``tests/**/test_*.py`` file is not collected by pytest (CI step, ``.ci/run``).

pytest's default ``norecursedirs`` silently skips folders named ``build``, ``dist`` and ``.*``: a test file
there never runs. This lists every test file on disk and every file pytest collects, and exits 1 naming the
difference. Usage: python scripts/check_test_collection.py [TESTS_DIR]
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def collected_files(tests: Path) -> set[str]:
    """Test files pytest collects (any marker), as POSIX paths relative to the current folder."""
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-m", "",
                          str(tests)], capture_output=True, text=True)
    if out.returncode not in (0, 5):  # 5: no tests collected, which the comparison reports
        sys.exit(f"pytest could not collect the tests:\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
    return {line.split("::", 1)[0] for line in out.stdout.splitlines() if "::" in line}


def main() -> int:
    tests = Path(sys.argv[1] if len(sys.argv) > 1 else "tests")
    on_disk = {p.as_posix() for p in tests.rglob("test_*.py") if "__pycache__" not in p.parts}
    missing = sorted(on_disk - collected_files(tests))
    if missing:
        print(f"{len(missing)} test file(s) are never collected by pytest (a folder named build, dist or .*?):",
              file=sys.stderr)
        for path in missing:
            print(f"  {path}", file=sys.stderr)
        return 1
    print(f"all {len(on_disk)} test files are collected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
