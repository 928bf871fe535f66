"""The machine fingerprint tells apart the CPUs that train differently."""

from __future__ import annotations

import dataclasses

import torch

from spheroid_hpo.training.machine import _cpu_model_and_flags, machine_fingerprint

XEON_AMX = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_bf16 amx_bf16 amx_tile amx_int8 avx512_vnni
"""
EPYC = """processor\t: 0
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_bf16 avx512_vnni
"""


def test_cpu_model_and_kernel_flags_are_read_from_cpuinfo(tmp_path, monkeypatch):
    xeon, epyc = tmp_path / "xeon", tmp_path / "epyc"
    xeon.write_text(XEON_AMX)
    epyc.write_text(EPYC)
    monkeypatch.setattr("spheroid_hpo.training.machine._cpu_model_and_flags", lambda: _cpu_model_and_flags(xeon))
    with_amx = machine_fingerprint(torch.device("cpu"), threads=2, precision="fp32")
    monkeypatch.setattr("spheroid_hpo.training.machine._cpu_model_and_flags", lambda: _cpu_model_and_flags(epyc))
    without_amx = machine_fingerprint(torch.device("cpu"), threads=2, precision="fp32")
    assert with_amx.cpu == "Intel(R) Xeon(R) Platinum 8480+" and without_amx.cpu == "AMD EPYC"
    assert {"amx_tile", "amx_bf16", "amx_int8"} <= set(with_amx.cpu_flags)
    assert not {"amx_tile", "amx_bf16"} & set(without_amx.cpu_flags)
    # The capability torch reports is the same on both; the flags are what tell them apart.
    assert with_amx.aten_capability == without_amx.aten_capability
    differences = with_amx.differences(without_amx)
    assert len(differences) == 2 and differences[0].startswith("cpu 'AMD EPYC' here")


def test_threads_and_precision_are_part_of_the_fingerprint():
    here = machine_fingerprint(torch.device("cpu"), threads=1, precision="fp32")
    assert here == machine_fingerprint(torch.device("cpu"), threads=1, precision="fp32")
    assert here.differences(dataclasses.replace(here, threads=2)) == ["threads 2 here, 1 recorded"]
    assert here.differences(dataclasses.replace(here, precision="bf16")) == ["precision 'bf16' here, 'fp32' recorded"]
    assert here.torch == torch.__version__ and here.device == "cpu" and here.gpu == ""
