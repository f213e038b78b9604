"""Quality filters for generated rows; each marks what it would remove and why."""

from .base import FILTERS, Candidate, Filter, FilterContext, Flag, register_filter, run_filters
from . import checks as _checks  # noqa: F401  built-ins register like plugins
from . import dedup as _dedup  # noqa: F401
from . import format as _format  # noqa: F401
from . import judge as _judge  # noqa: F401

__all__ = ["FILTERS", "Candidate", "Filter", "FilterContext", "Flag", "register_filter", "run_filters"]
