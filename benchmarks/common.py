"""Output helpers shared by the benchmarks: a table for people, JSON for machines."""

from __future__ import annotations

import json
import platform
import sys
from typing import Any


def machine() -> dict[str, Any]:
    import os

    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}


def report(title: str, header: list[str], rows: list[list[Any]], data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        json.dump({"benchmark": title, "machine": machine(), **data}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    print(f"\n{title}  ({platform.python_version()}, {machine()['cpus']} cpu)")
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *cells, strict=False)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=False)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=False))))
    print("\nJSON:")
    print(json.dumps({"benchmark": title, "machine": machine(), **data}))
