"""Small CSV and file-tree builders for the data tests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

CSV_HEADER = "date,open,high,low,close,volume"


def write_csv(path: Path, rows: list[str], header: str = CSV_HEADER) -> Path:
    """Write a CSV file from a header line and data lines; return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def good_rows(n: int = 5, start: str = "2020-01-06") -> list[str]:
    """``n`` valid daily CSV rows (business days from ``start``)."""
    days = pd.bdate_range(start, periods=n)
    return [f"{d.date()},{100 + i},{102 + i},{99 + i},{101 + i},{1000 + i}" for i, d in enumerate(days)]


def tree(root: Path) -> list[str]:
    """Every path under ``root`` (hidden ones included), relative, sorted; [] if ``root`` is missing."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []
