"""What a run costs: this machine (amortised hardware plus electricity) against rented GPUs.

The price table is YAML the user can copy and edit (``prices.yaml`` in the package holds dated
defaults and their sources). On-premise cost per hour is

    hardware_price / (lifetime_years x 8760 x utilisation) + watts / 1000 x electricity_per_kwh

and a cloud run costs its estimated hours times the instance's hourly price, where the estimate is
the run's FLOPs over the GPU's dense bf16 peak x ``gpu_efficiency``, plus a per-step launch overhead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import TunewrightError

HOURS_PER_YEAR = 8760
PRICES_FILENAME = "prices.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OnPremise(_Strict):
    name: str = "this machine"
    hardware_price: float = Field(ge=0)
    lifetime_years: float = Field(gt=0)
    utilisation: float = Field(gt=0, le=1)
    watts: float = Field(ge=0)
    electricity_per_kwh: float = Field(ge=0)

    @property
    def cost_per_hour(self) -> float:
        amortised = self.hardware_price / (self.lifetime_years * HOURS_PER_YEAR * self.utilisation)
        return amortised + self.watts / 1000 * self.electricity_per_kwh


class CloudOffer(_Strict):
    provider: str
    instance: str
    gpu: str
    gpus: int = Field(1, ge=1)
    gpu_memory_gib: float = Field(gt=0)
    bf16_tflops: float = Field(gt=0)
    price_per_hour: float = Field(ge=0)


class PriceTable(_Strict):
    as_of: str
    currency: str = "USD"
    gpu_efficiency: float = Field(0.3, gt=0, le=1)
    gpu_step_overhead_s: float = Field(0.05, ge=0)
    on_premise: OnPremise
    cloud: list[CloudOffer] = Field(default_factory=list)


def default_prices_path() -> Path:
    return Path(str(resources.files("tunewright.plan") / PRICES_FILENAME))


def find_prices(explicit: str | Path | None, workspace_root: Path | None) -> Path:
    """--prices wins; then the workspace's own prices.yaml; then the packaged defaults."""
    if explicit is not None:
        return Path(explicit)
    if workspace_root is not None and (workspace_root / PRICES_FILENAME).is_file():
        return workspace_root / PRICES_FILENAME
    return default_prices_path()


def load_prices(path: str | Path) -> PriceTable:
    from ..config import _line_of

    path = Path(path)
    if not path.is_file():
        raise TunewrightError("price file not found", file=path)
    try:
        text = path.read_text(encoding="utf-8")
        node, data = yaml.compose(text), yaml.safe_load(text)
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        mark = getattr(exc, "problem_mark", None)
        raise TunewrightError(f"not a readable YAML price table: {getattr(exc, 'problem', None) or exc}", file=path,
                              line=mark.line + 1 if mark else None) from None
    if not isinstance(data, dict):
        raise TunewrightError("a price table is a mapping (as_of, on_premise, cloud)", file=path, line=1)
    try:
        return PriceTable.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        message = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        raise TunewrightError(message, file=path, line=_line_of(node, loc),
                              field=".".join(str(p) for p in loc) or None) from None


@dataclass(frozen=True)
class CostRow:
    where: str
    hardware: str
    hours: float
    price_per_hour: float
    cost: float
    fits: bool  # whether the run's memory fits the GPU (always true for this machine: the plan made it fit)
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def gpu_hours(flops: float, steps: int, offer: CloudOffer, table: PriceTable) -> float:
    return (flops / (offer.bf16_tflops * 1e12 * table.gpu_efficiency) + steps * table.gpu_step_overhead_s) / 3600


def cost_table(table: PriceTable, *, local_seconds: float, local_hardware: str, flops: float, steps: int,
               gpu_memory_needed: int) -> list[CostRow]:
    """This machine first, then every cloud offer, cheapest first."""
    hours = local_seconds / 3600
    rows = [CostRow(where=table.on_premise.name, hardware=local_hardware, hours=hours,
                    price_per_hour=table.on_premise.cost_per_hour, cost=hours * table.on_premise.cost_per_hour,
                    fits=True)]
    cloud = []
    for offer in table.cloud:
        hours = gpu_hours(flops, steps, offer, table)
        fits = gpu_memory_needed <= offer.gpu_memory_gib * 2**30
        note = "" if offer.gpus == 1 else f"bills {offer.gpus} GPUs, trains on 1"
        cloud.append(CostRow(where=f"{offer.provider} {offer.instance}", hardware=offer.gpu, hours=hours,
                             price_per_hour=offer.price_per_hour, cost=hours * offer.price_per_hour, fits=fits,
                             note=note if fits else "does not fit in GPU memory"))
    return rows + sorted(cloud, key=lambda row: (not row.fits, row.cost))
