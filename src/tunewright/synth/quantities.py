"""Read a table cell as a comparable quantity: "480 g" is lighter than "1.2 kg", "$189" cheaper than "$349".

A small unit table rather than a units library (pint): table cells hold one number and at most one
common unit, and what matters is only ordering within a column, so a dictionary of factors to one
base unit per dimension is all that is needed.
"""

from __future__ import annotations

import re

# unit -> (dimension, factor to the dimension's base unit)
UNITS: dict[str, tuple[str, float]] = {
    "mg": ("mass", 1e-3), "g": ("mass", 1.0), "gram": ("mass", 1.0), "grams": ("mass", 1.0),
    "kg": ("mass", 1e3), "kilo": ("mass", 1e3), "kilos": ("mass", 1e3), "kilogram": ("mass", 1e3),
    "kilograms": ("mass", 1e3), "oz": ("mass", 28.349523125), "lb": ("mass", 453.59237), "lbs": ("mass", 453.59237),
    "mm": ("length", 1e-3), "cm": ("length", 1e-2), "m": ("length", 1.0), "km": ("length", 1e3),
    "in": ("length", 0.0254), "ft": ("length", 0.3048),
    "ml": ("volume", 1e-3), "l": ("volume", 1.0), "liter": ("volume", 1.0), "liters": ("volume", 1.0),
    "litre": ("volume", 1.0), "litres": ("volume", 1.0),
    "kbps": ("rate", 1e-3), "mbps": ("rate", 1.0), "gbps": ("rate", 1e3),
    "kb": ("data", 1e-3), "mb": ("data", 1.0), "gb": ("data", 1e3), "tb": ("data", 1e6),
    "day": ("time", 1.0), "days": ("time", 1.0), "week": ("time", 7.0), "weeks": ("time", 7.0),
    "month": ("time", 30.4375), "months": ("time", 30.4375), "year": ("time", 365.25), "years": ("time", 365.25),
}
_CELL = re.compile(r"^\s*(?P<currency>[$€£])?\s*(?P<number>-?\d[\d,]*(?:\.\d+)?)\s*(?P<unit>[A-Za-z]+)?\s*$")


def parse_quantity(text: str) -> tuple[str, float] | None:
    """(dimension, value in base units), or None when the cell is no single quantity ("lifetime").

    A bare number or an amount of money has dimension "number" ("money" with a currency sign)."""
    match = _CELL.match(text or "")
    if match is None:
        return None
    value = float(match["number"].replace(",", ""))
    unit = (match["unit"] or "").lower()
    if not unit:
        return ("money" if match["currency"] else "number", value)
    if unit not in UNITS or match["currency"]:
        return None
    dimension, factor = UNITS[unit]
    return dimension, value * factor
