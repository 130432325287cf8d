"""Per-hardware speed settings (bf16 autocast, torch.compile, channels_last, CPU threads), from "auto" or as given.

`choose` turns --precision / --compile / --channels_last (and OMP_NUM_THREADS) into concrete values plus a one-line
reason for each; `summary_line` prints them. Every "auto" decision rests on a hardware query made here (CPU flags,
CUDA bf16, a real C++ compiler probe, triton, a timed burst of ops at 1 thread and at torch's default) and on the
constants below, each with the measurement it comes from.
"""
import functools
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time

import torch

from dgmkit.data.datasets import usable_cpus
from dgmkit.errors import UserError

# Training steps from which "auto" compiles. CPU, measured on a 2-core AMD EPYC (AVX2 only), torch 2.15, 2 threads,
# a stand-in VAE step (5-conv encoder, 3 transposed-conv decoder, batch 128, Adam): compiling costs 23-25 s on the
# first batch plus 15-16 s to recompile for an epoch's smaller last batch, ~39 s cold (3.4 s with a warm inductor
# cache); it saves a median 17 ms of a ~165 ms channels_last step (8-22 ms per round). Cold payback: ~2,300 steps at
# the median gain, ~4,800 at the worst round's, so 5,000 (10.7 FashionMNIST epochs; 80 epochs = 37,520 steps).
# CUDA: an estimate, not measured (no GPU here). The step is launch-bound, so compiling may halve it, but that
# saves only ~1-3 ms of a few-ms step against ~20-40 s of compilation: payback ~10,000 steps, doubled for margin.
COMPILE_MIN_STEPS = {"cpu": 5000, "cuda": 20000}

# channels_last per device class. CPU: measured on the machine above, interleaved A/B, 8 rounds: eager fp32
# channels_last/NCHW step time 0.87-0.97 (median 0.90, never slower); compiled 0.87-1.01 (median 0.99), so on.
# CUDA: unmeasured here; the usual recommendation for convs with cuDNN (its tensor-core kernels are NHWC).
CHANNELS_LAST_AUTO = {"cpu": True, "cuda": True}

# /proc/cpuinfo flags and torch CPU-capability names that mean the CPU executes bf16 dot products natively.
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
_BF16_CAPABILITIES = ("AVX512_BF16", "AMX")

# Threads: "auto" drops to 1 thread when a burst of the families' typical ops is this much slower at torch's default
# count than at 1. A busy core makes every parallel op wait at OpenMP barriers for the thread that shares it. On the
# 2-core machine above the burst's ratio (default / 1 thread) was 0.5-0.7 near idle (load 1.8, kept) and 1.6-12.7
# with one core busy, where a GAN step took 5-38x as long at 2 threads. Above 1 but below this, 1 thread is not
# taken: the count changes the last bits of CPU results, so a rerun on an idle machine keeps the default's numbers.
# Epoch timings: part1/README.md, Threads.
THREADS_SLOWDOWN = 1.25
_THREAD_PROBE_BUDGET_S = 0.25  # rounds stop once this is spent (at least one); a loaded machine decides early

_PROBE_TIMEOUT_S = 60  # a cold g++ start on a loaded 2-core machine takes seconds; a hang must not block training


def _torch_cpu_capability() -> str:
    """torch's own CPU capability string ("" when this torch version has no such query)."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return ""


def cpu_has_native_bf16(cpuinfo_text: str | None = None) -> bool:
    """Whether the CPU runs bf16 natively (without it bf16 autocast is emulated and 8-15x slower).

    Given text: its `flags :` lines alone decide (an `avx512_bf16` or `amx_bf16` flag). None: the flags of
    /proc/cpuinfo, or torch's CPU capability naming AVX512_BF16 / AMX; either signal is enough, since some torch
    versions report only the coarse capability and /proc/cpuinfo exists only on Linux.
    """
    if cpuinfo_text is None:  # without /proc/cpuinfo, torch's capability is the only signal left
        capability = _torch_cpu_capability().upper()
        return _flags_say_bf16(_cpuinfo()) or any(name in capability for name in _BF16_CAPABILITIES)
    return _flags_say_bf16(cpuinfo_text)


def _cpuinfo() -> str:
    """/proc/cpuinfo's text, or "" where there is none (not Linux, or a sandbox hiding /proc)."""
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


def _flags_say_bf16(cpuinfo_text: str) -> bool:
    """Whether any `flags :` line of a /proc/cpuinfo text lists a native-bf16 flag (matched as whole words)."""
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags" and set(value.split()).intersection(_BF16_FLAGS):
            return True
    return False


def machine(device: torch.device, cpuinfo_text: str | None = None) -> dict:
    """What a run or benchmark ran on, for its files (timings mean nothing without it).

    device_name: the CUDA device's name, else the CPU model (/proc/cpuinfo's first `model name`, or the given
    text's; platform's names where there is none); cpus: logical CPUs this process may use (its affinity mask, so
    a container's or taskset's limit shows); threads: torch's intra-op threads (OMP_NUM_THREADS or
    torch.set_num_threads); torch and cuda: versions (cuda None for a CPU-only build).
    """
    if cpuinfo_text is None:
        cpuinfo_text = _cpuinfo()
    cpu_model = next((value.strip() for key, _, value in (line.partition(":") for line in cpuinfo_text.splitlines())
                      if key.strip() == "model name" and value.strip()), None)
    if device.type == "cuda" and torch.cuda.is_available():
        name = torch.cuda.get_device_name(device)
    else:
        name = cpu_model or platform.processor() or platform.machine() or "unknown"
    return {"device_name": name, "cpus": usable_cpus(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.version.cuda}


def cuda_bf16(device: torch.device) -> bool:
    """Whether `device` is a usable CUDA device whose hardware runs bf16 (torch.cuda.is_bf16_supported: Ampere+)."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    try:
        # Called without emulation so pre-Ampere GPUs, which only emulate bf16, report False.
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch versions before the including_emulation argument never counted emulation
        return bool(torch.cuda.is_bf16_supported())


def _compiler_candidates() -> list[str]:
    """The C++ compilers inductor would try, in its order: torch._inductor.config.cpp.cxx (a name or a tuple whose
    None entry means a conda download, skipped here), else $CXX, c++, g++, gcc."""
    try:
        from torch._inductor import config as inductor_config
        cxx = inductor_config.cpp.cxx
        configured = list(cxx) if isinstance(cxx, (list, tuple)) else [cxx]
    except (ImportError, AttributeError):
        configured = []
    configured = [name for name in configured if name]
    return configured or [name for name in (os.environ.get("CXX"), "c++", "g++", "gcc") if name]


@functools.lru_cache(maxsize=None)
def cxx_compiler_works() -> tuple[bool, str]:
    """(True, "") if the compiler inductor would use builds a trivial C++ file into a shared object in a temp dir
    within the timeout; else (False, why). Finding the binary is not enough (a broken toolchain or missing headers
    only show when compiling). Cached: the probe costs a compiler start, and the toolchain does not change mid-run."""
    candidates = _compiler_candidates()
    # inductor takes the first candidate that exists, so that is the one to test (not any working one).
    compiler = next((path for path in map(shutil.which, candidates) if path), None)
    if compiler is None:
        return False, f"no C++ compiler found (tried {', '.join(candidates)})"
    with tempfile.TemporaryDirectory(prefix="cxx_probe_") as tmp:
        source, library = os.path.join(tmp, "probe.cpp"), os.path.join(tmp, "probe.so")
        with open(source, "w") as f:
            f.write('#include <vector>\nextern "C" int probe() { std::vector<int> v{1, 2}; return v[1]; }\n')
        try:
            result = subprocess.run([compiler, "-shared", "-fPIC", "-O1", source, "-o", library],
                                    capture_output=True, text=True, timeout=_PROBE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return False, f"{compiler} did not finish a trivial build within {_PROBE_TIMEOUT_S} s"
        except OSError as error:
            return False, f"{compiler} could not be run ({error})"
        if result.returncode != 0 or not os.path.exists(library):
            detail = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[0]
            return False, f"{compiler} failed a trivial build: {detail[:120]}"
    return True, ""


def can_compile(device: torch.device) -> tuple[bool, str]:
    """(ok, why not): inductor needs a working C++ compiler for CPU code and triton for CUDA kernels."""
    if device.type == "cpu":
        return cxx_compiler_works()
    if device.type == "cuda":
        try:
            import triton  # noqa: F401  (imported only to learn whether inductor can generate GPU kernels)
        except ImportError:
            return False, "triton is not installed"
        return True, ""
    return False, f"no compile support assumed for device type {device.type!r}"


def _device_class(device: torch.device) -> str:
    """"cuda" for CUDA devices, "cpu" for everything else (the conservative class: higher compile threshold)."""
    return "cuda" if device.type == "cuda" else "cpu"


def choose_precision(device: torch.device, precision: str) -> tuple[str, str, str]:
    """(precision, why, warning); auto picks bf16 only on hardware with native bf16."""
    native = cuda_bf16(device) if device.type == "cuda" else cpu_has_native_bf16()
    where = "this GPU" if device.type == "cuda" else "this CPU"
    if precision == "auto":
        return ("bf16", f"auto: native bf16 on {where}", "") if native else \
            ("fp32", f"auto: no native bf16 on {where}", "")
    if precision == "bf16" and not native:
        warning = f"bf16 requested but {where} has no native bf16: autocast is emulated and can be 8-15x slower"
        return "bf16", "explicit; warning: no native bf16, expect much slower steps", warning
    return precision, "explicit", ""


def _choose_compile(device: torch.device, compile: str, train_steps: int) -> tuple[bool, str]:
    """(compile, why); auto needs both a platform that can compile and a run long enough to repay compiling."""
    if compile in ("on", "off"):
        return compile == "on", "explicit"
    ok, reason = can_compile(device)
    if not ok:
        return False, f"auto: cannot compile here: {reason}"
    threshold = COMPILE_MIN_STEPS[_device_class(device)]
    if train_steps >= threshold:
        return True, f"auto: {train_steps:,} steps >= {threshold:,}"
    return False, f"auto: {train_steps:,} steps < {threshold:,}, too short to repay compiling"


def _thread_probe():
    """One step of the families' typical ops in miniature, forward and backward at batch 64: an MLP layer (the GAN's)
    and a 3x3 conv (the VAE's and RealNVP's). Its inputs come from a private generator: the run's RNG is untouched."""
    generator = torch.Generator().manual_seed(0)
    x, image = torch.randn(64, 784, generator=generator), torch.randn(64, 16, 14, 14, generator=generator)
    weight = torch.randn(784, 256, generator=generator).requires_grad_()
    kernel = torch.randn(32, 16, 3, 3, generator=generator).requires_grad_()

    def step():
        loss = torch.nn.functional.leaky_relu(x @ weight, 0.2).sum()
        (loss + torch.nn.functional.conv2d(image, kernel, padding=1).relu().sum()).backward()
    return step


def measure_threads(counts, rounds=7):
    """Median seconds of a probe step at each thread count ({count: s}): a warm-up step at the first count, then
    `rounds` rounds of one step each, in alternating order, fewer once _THREAD_PROBE_BUDGET_S is spent (under load
    one round decides). torch's count is restored afterwards."""
    step, before, times = _thread_probe(), torch.get_num_threads(), {count: [] for count in counts}
    try:
        start = time.perf_counter()
        torch.set_num_threads(counts[0])
        step()
        for turn in range(rounds):
            for count in counts if turn % 2 == 0 else counts[::-1]:
                torch.set_num_threads(count)
                t0 = time.perf_counter()
                step()
                times[count].append(time.perf_counter() - t0)
            if time.perf_counter() - start > _THREAD_PROBE_BUDGET_S:
                break
    finally:
        torch.set_num_threads(before)
    return {count: statistics.median(seconds) for count, seconds in times.items()}


def _choose_threads(device: torch.device) -> tuple[int, str]:
    """(threads, why): OMP_NUM_THREADS when set (torch's count then is the user's); on the CPU, 1 when the probe
    runs THREADS_SLOWDOWN times slower at torch's default count, else that default."""
    default = torch.get_num_threads()
    if os.environ.get("OMP_NUM_THREADS"):
        return default, "explicit: OMP_NUM_THREADS"
    if device.type != "cpu":
        return default, f"auto: torch's default on a {device.type.upper()} run"
    if default == 1:
        return 1, "auto: torch's default is 1"
    seconds = measure_threads((1, default))
    ratio = seconds[default] / seconds[1]
    measured = f"auto: {default} threads took {ratio:.1f}x the time of 1"
    return (1, f"{measured}: a busy CPU") if ratio >= THREADS_SLOWDOWN else (default, measured)


def apply_threads(choice: dict) -> dict:
    """Set torch's threads to choice["threads"] before anything trains (a resumed run's recorded count: it computes
    what the uninterrupted run did; none recorded by older runs: left alone); OMP_NUM_THREADS, when set, wins."""
    if "threads" in choice and os.environ.get("OMP_NUM_THREADS"):
        choice["threads"] = torch.get_num_threads()
        choice["why"] = {**choice.get("why", {}), "threads": "explicit: OMP_NUM_THREADS"}
    if choice.get("threads"):
        torch.set_num_threads(choice["threads"])
    return choice


def choose(device: torch.device, precision: str, compile: str, channels_last: bool | None, train_steps: int) -> dict:
    """Resolve the speed options for `device` and a run of `train_steps` optimizer steps, and set torch's threads.

    precision: "auto" | "fp32" | "bf16"; compile: "auto" | "on" | "off"; channels_last: None (auto) | True | False.
    Explicit values are returned unchanged; the thread count is measured (_choose_threads) unless OMP_NUM_THREADS
    sets it, and torch is left at it. Returns {"precision", "compile", "channels_last", "threads", "why": {same keys:
    one-line reason}, "warning": "" or a line to show the user (explicit bf16 without native support)}.
    """
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be auto, fp32 or bf16, got {precision!r}")
    if compile not in ("auto", "on", "off"):
        raise ValueError(f"compile must be auto, on or off, got {compile!r}")
    chosen_precision, precision_why, warning = choose_precision(device, precision)
    chosen_compile, compile_why = _choose_compile(device, compile, train_steps)
    if channels_last is None:
        device_class = _device_class(device)
        chosen_layout, layout_why = CHANNELS_LAST_AUTO[device_class], f"auto: {device_class.upper()}"
    else:
        chosen_layout, layout_why = bool(channels_last), "explicit"
    threads, threads_why = _choose_threads(device)
    torch.set_num_threads(threads)
    return {"precision": chosen_precision, "compile": chosen_compile, "channels_last": chosen_layout, "threads": threads,
            "why": {"precision": precision_why, "compile": compile_why, "channels_last": layout_why,
                    "threads": threads_why}, "warning": warning}


def summary_line(choice: dict) -> str:
    """One line for the log, e.g. "precision fp32 (auto: no native bf16 on this CPU) | compile on (auto: 33,760
    steps >= 5,000) | channels_last on (auto: CPU) | threads 1 (auto: 2 threads took 4.8x the time of 1: a busy CPU)";
    reasons are omitted for a choice dict without "why", threads for one without "threads" (older records)."""
    why = choice.get("why", {})
    parts = [("precision", choice["precision"]), ("compile", "on" if choice["compile"] else "off"),
             ("channels_last", "on" if choice["channels_last"] else "off")]
    parts += [("threads", choice["threads"])] if choice.get("threads") else []
    return " | ".join(f"{name} {value}" + (f" ({why[name]})" if why.get(name) else "") for name, value in parts)


def resolve_device(name):
    """'auto' -> CUDA when available, else CPU; 'cuda' without CUDA is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was requested but PyTorch sees no CUDA device; use --device cpu (or auto)")
    return torch.device(name)
