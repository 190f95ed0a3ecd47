"""How many hostile cases the test suite holds, by class: every collected test marked
``@pytest.mark.hostile("kind")`` (each parametrised case counts once).

    python benchmarks/hostile_cases.py
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

KINDS = ("data", "stores", "serving", "proxy", "signals", "inputs", "security", "consistency")


class Count:
    """A pytest plugin that counts the collected hostile cases by kind."""

    def __init__(self) -> None:
        self.kinds: Counter[str] = Counter()

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            marker = item.get_closest_marker("hostile")
            if marker is not None:
                self.kinds[marker.args[0] if marker.args else "unclassified"] += 1


def main() -> None:
    count = Count()
    tests = Path(__file__).resolve().parent.parent / "tests"
    code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", str(tests)], [count])
    if code not in (0, 5):
        sys.exit(code)
    print(f"\n{'kind':<14} cases")
    for kind in (*KINDS, *sorted(set(count.kinds) - set(KINDS))):
        print(f"{kind:<14} {count.kinds[kind]:5d}")
    print(f"{'all':<14} {sum(count.kinds.values()):5d}")


if __name__ == "__main__":
    main()
