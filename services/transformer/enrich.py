"""Department codes from the lookup CSV; names match ignoring case and surrounding spaces."""

import csv
from pathlib import Path

UNKNOWN = "UNKNOWN"
DEFAULT_CSV = Path(__file__).with_name("departments.csv")


def load_departments(path: str | Path = "") -> dict[str, str]:
    """Normalised department name -> code; a clear error when the file is unusable."""
    path = Path(path) if path else DEFAULT_CSV
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or {"department_name", "department_code"} - set(reader.fieldnames):
                raise ValueError(f"{path}: header must be department_name,department_code")
            table = {
                _norm(row["department_name"]): row["department_code"].strip()
                for row in reader
                if row.get("department_name") and row.get("department_code")
            }
    except OSError as exc:
        raise ValueError(f"departments CSV unreadable: {exc}") from exc
    if not table:
        raise ValueError(f"{path}: no departments")
    return table


def _norm(name: str) -> str:
    return " ".join(name.split()).casefold()


def department_code(table: dict[str, str], name: str) -> str:
    """The code of department ``name`` (case and spacing ignored); ``UNKNOWN`` when the table lacks it."""
    return table.get(_norm(name), UNKNOWN)
