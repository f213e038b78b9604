"""Plan a run before it starts: hardware measured, memory and time predicted, a recommendation, the cost."""

from .api import Plan, Recommendation, check_precision, plan_run, plan_training, resolve_train_spec
from .cost import PriceTable, load_prices
from .hardware import Hardware, detect_hardware, measure_matmul, parse_cpuinfo

__all__ = [
    "Hardware",
    "Plan",
    "PriceTable",
    "Recommendation",
    "check_precision",
    "detect_hardware",
    "load_prices",
    "measure_matmul",
    "parse_cpuinfo",
    "plan_run",
    "plan_training",
    "resolve_train_spec",
]
