"""What this machine has, and how fast it actually multiplies matrices in each precision.

Precision is chosen from a measurement, never from a spec sheet: a CPU without AVX-512 BF16 or
AMX "supports" bf16 in PyTorch but runs it through a slow emulation path (on the 2-core AVX2
reference machine fp32 measured ~115 GFLOP/s and bf16 ~1.2 GFLOP/s), while on a GPU bf16 runs on
tensor cores many times faster than fp32.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

# The instruction-set extensions that decide how fast fp32/bf16/int8 matmuls can run.
INTERESTING_FLAGS = (
    "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
    "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8",
    "asimd", "asimdhp", "bf16", "i8mm", "sve", "sve2",  # Arm's names in the `Features` line
)
MATMUL_BUDGET_S = 1.0
_RATE_CACHE: dict[tuple[str, str, int], float] = {}


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    memory_bytes: int
    free_bytes: int  # other processes may hold part of the card
    capability: str  # "9.0"
    bf16: bool


@dataclass
class Hardware:
    cpu_model: str
    physical_cores: int | None
    logical_cores: int
    flags: list[str]
    ram_total: int
    ram_available: int
    gpus: list[GpuInfo] = field(default_factory=list)
    device: str = "cpu"  # where training runs: the loop uses the first CUDA GPU when there is one
    threads: int = 1
    rates: dict[str, float] = field(default_factory=dict)  # dtype -> measured FLOP/s on `device`

    @property
    def memory_total(self) -> int:
        return self.gpus[0].memory_bytes if self.device == "cuda" and self.gpus else self.ram_total

    @property
    def memory_available(self) -> int:
        return self.gpus[0].free_bytes if self.device == "cuda" and self.gpus else self.ram_available

    def rate(self, dtype: str) -> float:
        """Measured FLOP/s for ``dtype``, measuring on first use (fp16 on a CPU is only measured if asked)."""
        if dtype not in self.rates:
            self.rates[dtype] = measure_matmul(dtype, self.device, self.threads)
        return self.rates[dtype]

    def to_dict(self) -> dict:
        return asdict(self)


def parse_cpuinfo(text: str) -> tuple[str, list[str], int | None]:
    """Model name, the interesting flags and the physical core count from /proc/cpuinfo text."""
    model, flags, cores = "", set(), set()
    physical_id = core_id = None
    for line in text.splitlines() + [""]:
        if not line.strip():
            if core_id is not None:
                cores.add((physical_id, core_id))
            physical_id = core_id = None
            continue
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value
        elif key in ("flags", "features"):
            flags.update(value.split())
        elif key == "physical id":
            physical_id = value
        elif key == "core id":
            core_id = value
    return model, [f for f in INTERESTING_FLAGS if f in flags], len(cores) or None


def _cpu_description() -> tuple[str, list[str], int | None]:
    cpuinfo = Path("/proc/cpuinfo")
    model, flags, physical = "", [], None
    if cpuinfo.is_file():
        try:
            model, flags, physical = parse_cpuinfo(cpuinfo.read_text(errors="replace"))
        except OSError:
            pass
    if not model and platform.system() == "Darwin":
        import subprocess

        try:
            model = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                   timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return model or platform.processor() or platform.machine() or "unknown CPU", flags, physical


def _gpus() -> list[GpuInfo]:
    import torch

    if not torch.cuda.is_available():
        return []
    found = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        with torch.cuda.device(index):
            bf16 = bool(torch.cuda.is_bf16_supported())
            free, _total = torch.cuda.mem_get_info()
        found.append(GpuInfo(index=index, name=props.name, memory_bytes=int(props.total_memory), free_bytes=int(free),
                             capability=f"{props.major}.{props.minor}", bf16=bf16))
    return found


def measure_matmul(dtype: str, device: str = "cpu", threads: int | None = None, budget_s: float = MATMUL_BUDGET_S) -> float:
    """FLOP/s of square matmuls in ``dtype``, cached per process.

    The size grows from 128 until one multiply takes ~1/10 of the budget (or reaches the cap), so a
    slow emulated dtype costs a few milliseconds rather than seconds. The median repeat at the final
    size counts: training sustains that rate for minutes, while the best single multiply catches a
    short turbo burst (134 against a sustained 119 GFLOP/s on the reference machine).
    """
    import torch

    threads = threads or torch.get_num_threads()
    key = (device, dtype, threads)
    if key in _RATE_CACHE:
        return _RATE_CACHE[key]
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    cap = 4096 if device == "cuda" else 1024
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        deadline = time.perf_counter() + budget_s
        n = 128
        while True:
            a = torch.randn(n, n, device=device).to(torch_dtype)
            b = torch.randn(n, n, device=device).to(torch_dtype)
            a @ b  # warm-up: first call pays for kernel selection and page faults
            sync()
            started = time.perf_counter()
            a @ b
            sync()
            one = max(time.perf_counter() - started, 1e-9)
            if n >= cap or one > budget_s / 10 or time.perf_counter() > deadline:
                break
            n *= 2
        rates = [2 * n**3 / one]
        while time.perf_counter() + one < deadline or len(rates) < 3:
            started = time.perf_counter()
            a @ b
            sync()
            rates.append(2 * n**3 / max(time.perf_counter() - started, 1e-9))
    finally:
        torch.set_num_threads(previous)
    rate = statistics.median(rates)
    _RATE_CACHE[key] = rate
    return rate


def detect_hardware(*, threads: int | None = None, measure: bool = True) -> Hardware:
    import psutil

    model, flags, physical = _cpu_description()
    memory = psutil.virtual_memory()
    gpus = _gpus()
    hardware = Hardware(
        cpu_model=model,
        physical_cores=physical or psutil.cpu_count(logical=False),
        logical_cores=os.cpu_count() or 1,
        flags=flags,
        ram_total=int(memory.total),
        ram_available=int(memory.available),
        gpus=gpus,
        device="cuda" if gpus else "cpu",
        threads=threads or os.cpu_count() or 1,  # the loop's own default: every logical core
    )
    if measure:
        dtypes = ["fp32", "bf16"] if not gpus else ["fp32"] + (["bf16"] if gpus[0].bf16 else []) + ["fp16"]
        for dtype in dtypes:
            hardware.rate(dtype)
    return hardware


def fastest_dtype(hardware: Hardware) -> str:
    """The measured-fastest precision; bf16 wins a near tie with fp16, which needs loss scaling."""
    rates = {d: r for d, r in hardware.rates.items() if d != "fp16" or hardware.device == "cuda"}
    if not rates:
        return "fp32"
    best = max(rates, key=rates.get)
    if best == "fp16" and rates.get("bf16", 0) >= 0.9 * rates["fp16"]:
        return "bf16"
    return best


def cpu_generation_dtype(threads: int | None = None) -> str:
    """The precision a model on this CPU answers fastest in: bf16 where its measured matmul rate
    beats fp32 by a fifth (AVX512-BF16, AMX), else fp32. For generation that runs on the CPU
    whatever the training device is (the replay rows' answers), so a GPU machine whose CPU lacks bf16
    units keeps fp32 there."""
    bf16, fp32 = measure_matmul("bf16", "cpu", threads), measure_matmul("fp32", "cpu", threads)
    return "bf16" if bf16 > 1.2 * fp32 else "fp32"


def peak_rss_bytes() -> int:
    """This process's own peak resident memory.

    Linux's ``ru_maxrss`` survives ``exec``: a child started from a process holding 2 GB reports
    at least 2 GB whatever it does itself. ``VmHWM`` belongs to the process's current address
    space, so it starts from zero at ``exec``.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    import sys

    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
