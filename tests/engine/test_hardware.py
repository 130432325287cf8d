"""hardware.py: CPU flag parsing, CUDA bf16, the compiler probe, the thread probe, and every auto/explicit branch
of choose().

Hardware queries are mocked (cpuinfo text, torch.cuda, the compiler probe, triton, the thread timings), so these run
in well under a second on any machine; one test runs the real (cached) compiler probe, one the real thread probe.
"""
import os
import subprocess
import sys
import time
import types

import pytest
import torch

from dgmkit.engine import hardware

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
CPU_STEPS, CUDA_STEPS = hardware.COMPILE_MIN_STEPS["cpu"], hardware.COMPILE_MIN_STEPS["cuda"]

# Abridged flags lines of real CPUs: an AVX2-only AMD EPYC (Zen 2/3), a Cooper Lake Xeon (avx512_bf16),
# a Sapphire Rapids Xeon (AMX and avx512_bf16), and an AVX-512 Skylake Xeon without bf16.
EPYC_AVX2 = ("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B12\n"
             "flags\t\t: fpu vme de pse tsc msr sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 sha_ni vaes\n")
COOPER_LAKE = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8380H CPU @ 2.90GHz\n"
               "flags\t\t: fpu sse sse2 avx avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni "
               "avx512_bf16\n")
SAPPHIRE_RAPIDS = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
                   "flags\t\t: fpu sse avx2 avx512f avx512_vnni avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8\n")
AMX_ONLY = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f amx_tile amx_bf16\n"
SKYLAKE = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz\n"
           "flags\t\t: fpu sse avx avx2 avx512f avx512dq avx512cd avx512bw avx512vl\n"
           "bugs\t\t: avx512_bf16_is_not_a_flag_here\n")


@pytest.mark.parametrize("text, expected", [(EPYC_AVX2, False), (COOPER_LAKE, True), (SAPPHIRE_RAPIDS, True),
                                            (AMX_ONLY, True), (SKYLAKE, False), ("", False)])
def test_cpu_native_bf16_from_cpuinfo_flags(text, expected):
    assert hardware.cpu_has_native_bf16(text) is expected


def test_cpu_native_bf16_without_cpuinfo_falls_back_to_torch_capability(monkeypatch):
    def no_file(*args, **kwargs):
        raise FileNotFoundError("/proc/cpuinfo")
    monkeypatch.setattr("builtins.open", no_file)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AMX")
    assert hardware.cpu_has_native_bf16() is True
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert hardware.cpu_has_native_bf16() is False


@pytest.fixture(autouse=True)
def thread_timings(monkeypatch):
    """The thread probe's timings, set per test ({count: seconds}; default: every count equally fast), no
    OMP_NUM_THREADS, and torch's thread count restored afterwards (choose leaves torch at its choice)."""
    threads, timings = torch.get_num_threads(), {}
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(hardware, "measure_threads", lambda counts: {n: timings.get(n, 1.0) for n in counts})
    yield timings
    torch.set_num_threads(threads)


@pytest.fixture
def fake_cuda(monkeypatch):
    """A CUDA device that exists; the setter gives its bf16 support: True, False, or "emulated" (pre-Ampere GPUs,
    which torch counts as supported unless asked with including_emulation=False)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    def set_bf16(supported):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                            lambda including_emulation=True: supported is True or (supported and including_emulation))
    return set_bf16


@pytest.mark.parametrize("available, supported, expected", [(True, True, True), (True, False, False),
                                                            (True, "emulated", False), (False, True, False)])
def test_cuda_bf16(monkeypatch, fake_cuda, available, supported, expected):
    fake_cuda(supported)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    assert hardware.cuda_bf16(CUDA) is expected
    assert hardware.cuda_bf16(CPU) is False


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Sets what the CPU reports for native bf16, and a compiler probe that succeeds."""
    monkeypatch.setattr(hardware, "cxx_compiler_works", lambda: (True, ""))

    def set_native(native):
        monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda cpuinfo_text=None: native)
    set_native(False)
    return set_native


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_on_cpu(cpu_bf16, native, expected):
    cpu_bf16(native)
    choice = hardware.choose(CPU, "auto", "off", None, 100)
    assert choice["precision"] == expected
    assert choice["why"]["precision"] == ("auto: native bf16 on this CPU" if native else
                                          "auto: no native bf16 on this CPU")
    assert choice["warning"] == ""


@pytest.mark.parametrize("supported, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_on_cuda(fake_cuda, cpu_bf16, supported, expected):
    fake_cuda(supported)
    cpu_bf16(True)  # the host CPU must not matter for a CUDA run
    assert hardware.choose(CUDA, "auto", "off", None, 100)["precision"] == expected


@pytest.mark.parametrize("native", [True, False])
def test_explicit_precision_honoured(cpu_bf16, native):
    cpu_bf16(native)
    assert hardware.choose(CPU, "fp32", "off", None, 100)["precision"] == "fp32"
    choice = hardware.choose(CPU, "bf16", "off", None, 100)
    assert choice["precision"] == "bf16"
    # Explicit bf16 without native support runs, but says it will be slow.
    assert ("8-15x slower" in choice["warning"]) is not native
    assert choice["why"]["precision"].startswith("explicit")


# 6 steps: a 2-epoch test run on 300 images at batch 128 (never compiled); 37,520: 80 FashionMNIST epochs (always).
@pytest.mark.parametrize("device, steps, expected", [
    (CPU, 6, False), (CPU, CPU_STEPS - 1, False), (CPU, CPU_STEPS, True), (CPU, 37_520, True),
    (CUDA, 6, False), (CUDA, CUDA_STEPS - 1, False), (CUDA, CUDA_STEPS, True), (CUDA, 37_520, True)])
def test_auto_compile_threshold(monkeypatch, cpu_bf16, fake_cuda, device, steps, expected):
    fake_cuda(True)
    monkeypatch.setitem(sys.modules, "triton", types.ModuleType("triton"))
    choice = hardware.choose(device, "fp32", "auto", None, steps)
    assert choice["compile"] is expected
    threshold = hardware.COMPILE_MIN_STEPS[device.type]
    assert choice["why"]["compile"].startswith(f"auto: {steps:,} steps {'>=' if expected else '<'} {threshold:,}")


def test_auto_compile_off_when_compiler_probe_fails(monkeypatch):
    monkeypatch.setattr(hardware, "cxx_compiler_works", lambda: (False, "no C++ compiler found (tried g++)"))
    choice = hardware.choose(CPU, "fp32", "auto", None, 10 * CPU_STEPS)
    assert choice["compile"] is False
    assert choice["why"]["compile"] == "auto: cannot compile here: no C++ compiler found (tried g++)"
    assert hardware.can_compile(CPU) == (False, "no C++ compiler found (tried g++)")


def test_auto_compile_off_on_cuda_without_triton(monkeypatch, fake_cuda):
    fake_cuda(True)
    monkeypatch.setitem(sys.modules, "triton", None)  # None in sys.modules makes `import triton` raise ImportError
    assert hardware.can_compile(CUDA) == (False, "triton is not installed")
    assert hardware.choose(CUDA, "fp32", "auto", None, 10 * CUDA_STEPS)["compile"] is False


def test_explicit_compile_honoured(monkeypatch):
    monkeypatch.setattr(hardware, "cxx_compiler_works", lambda: (False, "no C++ compiler"))
    on = hardware.choose(CPU, "fp32", "on", None, 6)
    assert (on["compile"], on["why"]["compile"]) == (True, "explicit")
    off = hardware.choose(CPU, "fp32", "off", None, 10 * CPU_STEPS)
    assert (off["compile"], off["why"]["compile"]) == (False, "explicit")


def test_channels_last_auto_per_device_and_explicit(cpu_bf16, fake_cuda):
    fake_cuda(True)
    assert hardware.choose(CPU, "fp32", "off", None, 1)["channels_last"] is True
    assert hardware.choose(CPU, "fp32", "off", None, 1)["why"]["channels_last"] == "auto: CPU"
    assert hardware.choose(CUDA, "fp32", "off", None, 1)["channels_last"] is True
    assert hardware.choose(CUDA, "fp32", "off", None, 1)["why"]["channels_last"] == "auto: CUDA"
    for device in (CPU, CUDA):
        for given in (True, False):
            choice = hardware.choose(device, "fp32", "off", given, 1)
            assert (choice["channels_last"], choice["why"]["channels_last"]) == (given, "explicit")


def test_invalid_values_rejected():
    with pytest.raises(ValueError, match="precision"):
        hardware.choose(CPU, "fp16", "off", None, 1)
    with pytest.raises(ValueError, match="compile"):
        hardware.choose(CPU, "fp32", "yes", None, 1)


def test_summary_line(cpu_bf16, thread_timings):
    torch.set_num_threads(2)
    thread_timings.update({1: 0.010, 2: 0.048})
    choice = hardware.choose(CPU, "auto", "auto", False, 33_760)
    assert hardware.summary_line(choice) == (
        f"precision fp32 (auto: no native bf16 on this CPU) | compile on (auto: 33,760 steps >= {CPU_STEPS:,}) | "
        "channels_last off (explicit) | threads 1 (auto: 2 threads took 4.8x the time of 1: a busy CPU)")
    bare = {"precision": "bf16", "compile": False, "channels_last": True}  # recorded before threads were chosen
    assert hardware.summary_line(bare) == "precision bf16 | compile off | channels_last on"
    assert hardware.summary_line({**bare, "threads": 3}) == "precision bf16 | compile off | channels_last on | threads 3"


# ---- threads (issue 25: a busy core made torch's default count 5-40x slower than 1 thread) ----------------------

@pytest.mark.parametrize("one, default, expected, why", [
    (0.010, 0.048, 1, "auto: 4 threads took 4.8x the time of 1: a busy CPU"),
    (0.5, 0.625, 1, "auto: 4 threads took 1.2x the time of 1: a busy CPU"),  # exactly THREADS_SLOWDOWN (1.25)
    (0.010, 0.011, 4, "auto: 4 threads took 1.1x the time of 1"),  # a little slower: not worth other numbers
    (0.010, 0.006, 4, "auto: 4 threads took 0.6x the time of 1")])
def test_auto_threads_take_one_only_when_the_default_is_much_slower(thread_timings, one, default, expected, why):
    torch.set_num_threads(4)
    thread_timings.update({1: one, 4: default})
    choice = hardware.choose(CPU, "fp32", "off", None, 1)
    assert (choice["threads"], choice["why"]["threads"]) == (expected, why)
    assert torch.get_num_threads() == expected  # applied before anything trains


def test_threads_are_not_measured_when_set_or_when_there_is_nothing_to_choose(monkeypatch, fake_cuda):
    monkeypatch.setattr(hardware, "measure_threads", lambda counts: pytest.fail("measured"))
    torch.set_num_threads(3)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert hardware._choose_threads(CPU) == (3, "explicit: OMP_NUM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    fake_cuda(True)
    assert hardware._choose_threads(CUDA) == (3, "auto: torch's default on a CUDA run")
    torch.set_num_threads(1)
    assert hardware._choose_threads(CPU) == (1, "auto: torch's default is 1")


def test_apply_threads_sets_the_recorded_count_unless_omp_num_threads_says_otherwise(monkeypatch):
    """A resume applies the count its run recorded (the count changes the last bits of CPU results)."""
    torch.set_num_threads(2)
    recorded = {"threads": 1, "why": {"threads": "auto: 2 threads took 5.0x the time of 1: a busy CPU"}}
    assert hardware.apply_threads(dict(recorded))["threads"] == 1 and torch.get_num_threads() == 1
    torch.set_num_threads(2)
    assert hardware.apply_threads({"precision": "fp32"}) == {"precision": "fp32"}  # recorded before threads
    assert torch.get_num_threads() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    choice = hardware.apply_threads(dict(recorded))
    assert (choice["threads"], choice["why"]["threads"], torch.get_num_threads()) == (2, "explicit: OMP_NUM_THREADS", 2)
    assert recorded["why"]["threads"].startswith("auto")  # the record read from the checkpoint is left as it was


def test_the_real_thread_probe_is_cheap_and_leaves_the_run_alone(monkeypatch):
    monkeypatch.undo()  # the real measure_threads
    torch.set_num_threads(2)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    started = time.perf_counter()
    seconds = hardware.measure_threads((1, 2))
    assert time.perf_counter() - started < 2.0  # ~0.1-0.4 s; the bound leaves room for a loaded test machine
    assert set(seconds) == {1, 2} and all(s > 0 for s in seconds.values())
    assert torch.get_num_threads() == 2 and torch.equal(torch.rand(3), expected)  # threads restored, RNG untouched


BUILD_ERROR = "fatal error: vector: No such file or directory\ncompilation terminated.\n"


@pytest.mark.parametrize("which, expected", [
    ("/usr/bin/g++", (False, "/usr/bin/g++ failed a trivial build: fatal error: vector: No such file or directory")),
    (None, (False, "no C++ compiler found (tried g++, c++)"))])
def test_compiler_probe_failures(monkeypatch, which, expected):
    hardware.cxx_compiler_works.cache_clear()
    monkeypatch.setattr(hardware, "_compiler_candidates", lambda: ["g++", "c++"])
    monkeypatch.setattr(hardware.shutil, "which", lambda name: which)
    monkeypatch.setattr(hardware.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a[0], 1, "", BUILD_ERROR))
    try:
        assert hardware.cxx_compiler_works() == expected
    finally:
        hardware.cxx_compiler_works.cache_clear()  # do not leave a mocked result cached for the real probe


def test_real_compiler_probe_says_why_and_runs_once(monkeypatch):
    """The probe on this machine's toolchain: a reason exactly when it fails; a second call looks for no
    compiler and builds nothing (cached), yet gives the same answer."""
    ok, reason = hardware.cxx_compiler_works()
    assert (reason == "") is ok
    monkeypatch.setattr(hardware.shutil, "which", lambda name: pytest.fail("the probe looked for a compiler again"))
    monkeypatch.setattr(hardware.subprocess, "run", lambda *a, **k: pytest.fail("the probe built again"))
    assert hardware.cxx_compiler_works() == (ok, reason)


CPUINFO = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9999 64-Core Processor\nflags\t: avx2\n"


def test_machine_names_the_cpu_threads_and_versions(one_thread):
    m = hardware.machine(torch.device("cpu"), CPUINFO)
    assert m["device_name"] == "AMD EPYC 9999 64-Core Processor"  # the first `model name`, stripped
    assert m["threads"] == 1 and m["torch"] == torch.__version__ and m["cuda"] == torch.version.cuda
    assert 1 <= m["cpus"] <= os.cpu_count()
    # No model name (e.g. some ARM kernels): platform's name, never empty.
    assert hardware.machine(torch.device("cpu"), "processor\t: 0\n")["device_name"]


def test_machine_names_the_gpu(monkeypatch, fake_cuda):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    assert hardware.machine(torch.device("cuda"), CPUINFO)["device_name"] == "NVIDIA H100 80GB HBM3"
