"""`make reliability`: the table of reliability and security records written by the test suite."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPORTS = Path(__file__).resolve().parent.parent / "reports" / "reliability"


def main() -> int:
    """Print one row per record; exit 1 when a record has violations or none exist."""
    records = [json.loads(path.read_text()) for path in sorted(REPORTS.glob("*.json"))]
    console = Console()
    if not records:
        console.print(f"no records in {REPORTS}: run `make test` first")
        return 1
    table = Table(title="Aether reliability and security records")
    for column in ("id", "seed", "cases", "violations"):
        table.add_column(column)
    for record in records:
        table.add_row(*(str(record.get(key, "")) for key in ("id", "seed", "cases", "violations")))
    console.print(table)
    return 1 if any(record.get("violations") for record in records) else 0


if __name__ == "__main__":
    sys.exit(main())
