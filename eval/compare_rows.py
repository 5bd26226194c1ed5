"""Compare two ``idealagent eval`` results files row by row, timings and the cache setting aside.

    python eval/compare_rows.py A.jsonl B.jsonl

Prints how many samples stopped the same way (stop reason and number of rounds) and how many
of those have identical rows: what a rerun from the response cache must keep.
"""

from __future__ import annotations

import json
import sys
from typing import Any

# Differ between two runs of the same requests without meaning anything.
IGNORED = {"latency_s", "timings", "cache", "confidence_threshold"}


def clean(value: Any) -> Any:
    """``value`` without the ignored keys, at any depth."""
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items() if k not in IGNORED}
    if isinstance(value, list):
        return [clean(v) for v in value]
    return value


def rows(path: str) -> dict[str, Any]:
    """The file's rows by sample id (the first line is the header)."""
    with open(path, encoding="utf-8") as file:
        return {row["id"]: clean(row) for row in map(json.loads, list(file)[1:])}


def main(first: str, second: str) -> None:
    a, b = rows(first), rows(second)
    shared = [i for i in a if i in b]
    same_stop = [i for i in shared if (a[i]["stop_reason"], len(a[i]["trace"]["rounds"]))
                 == (b[i]["stop_reason"], len(b[i]["trace"]["rounds"]))]
    identical = [i for i in same_stop if a[i] == b[i]]
    print(f"{len(shared)} shared rows; same stopping {len(same_stop)}; of which identical {len(identical)}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
