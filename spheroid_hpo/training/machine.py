"""What a training run's floating-point results depend on, beyond its code and data.

Two runs of the same configuration and seed land on the same numbers only when
the arithmetic happens in the same order: same torch build, same kernels (chosen
by the CPU's instruction sets, or the GPU and its driver), same thread count,
same precision. ``torch.backends.cpu.get_cpu_capability()`` alone is not
enough: it says "AVX512" both on a Xeon with AMX and on an EPYC without it,
which train differently, so the CPU model and the kernel-changing ISA flags are
recorded too. ``ATEN_CPU_CAPABILITY=default`` shows up as capability "DEFAULT".
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

# CPU flags (as /proc/cpuinfo spells them) that change which kernels oneDNN and ATen pick.
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16",
                "amx_int8")


@dataclass(frozen=True)
class MachineFingerprint:
    """The hardware and software facts a retraining must share to be bit-for-bit exact."""

    torch: str
    device: str  # "cpu" or "cuda"
    cpu: str
    cpu_flags: tuple[str, ...]
    aten_capability: str
    gpu: str  # "" on CPU
    gpu_driver: str  # "" on CPU
    threads: int
    precision: str

    def differences(self, other: MachineFingerprint) -> list[str]:
        """One phrase per fact that differs, e.g. "threads 1 here, 2 recorded"; empty when identical."""
        return [f"{field.name} {getattr(other, field.name)!r} here, {getattr(self, field.name)!r} recorded"
                for field in fields(self) if getattr(self, field.name) != getattr(other, field.name)]

    def as_dict(self) -> dict:
        """The fingerprint as plain values (lists for tuples), for TOML."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    def describe(self) -> str:
        """One line for people: device, CPU or GPU, kernels, threads, precision, torch."""
        where = (f"{self.gpu} (driver {self.gpu_driver})" if self.device == "cuda"
                 else f"{self.cpu} [{' '.join(self.cpu_flags) or 'no AVX2'}]")
        return (f"{self.device} {where}, ATen {self.aten_capability}, {self.threads} thread(s), {self.precision}, "
                f"torch {self.torch}")


def machine_fingerprint(device: torch.device, *, threads: int, precision: str) -> MachineFingerprint:
    """The fingerprint of this machine for training on ``device`` with ``threads`` CPU threads."""
    gpu = gpu_driver = ""
    if device.type == "cuda":
        gpu = torch.cuda.get_device_name(device)
        gpu_driver = _cuda_driver_version()
    model, flags = _cpu_model_and_flags()
    return MachineFingerprint(
        torch=torch.__version__, device=device.type, cpu=model,
        cpu_flags=tuple(flag for flag in KERNEL_FLAGS if flag in flags),
        aten_capability=torch.backends.cpu.get_cpu_capability(), gpu=gpu, gpu_driver=gpu_driver,
        threads=threads, precision=precision,
    )


def _cpu_model_and_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = cpuinfo.read_text()
    except OSError:  # not Linux: the model name is all there is
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            model = value.strip()
        elif key.strip() in ("flags", "Features"):
            flags = set(value.split())
        if flags and model:
            break
    return model, flags


def _cuda_driver_version() -> str:
    try:
        version = torch._C._cuda_getDriverVersion()  # e.g. 12040 for 12.4
    except (AttributeError, RuntimeError):
        return "unknown"
    return f"{version // 1000}.{version % 1000 // 10}"
