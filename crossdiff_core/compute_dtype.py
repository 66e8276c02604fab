"""Choose the dtype models compute in: bf16 where the hardware runs it fast, else fp32.

On a GPU (and on CPUs with bf16 instructions: `avx512_bf16`, `amx_bf16`, Arm's `bf16`) bf16
halves memory at the speed of fp32 or better. A CPU without them (AVX2 only) emulates bf16
matrix products, and they run tens of times slower than fp32: on a 2-core AMD EPYC with AVX2 a
bf16 matmul did 0.6 GFLOP/s against 35 in fp32, and a 4k-token harvest of the demo pair took 323 s
in bf16 against 116 s in fp32. NF4 models compute in their compute dtype too, so the choice
matters for them as well.

`pick_compute_dtype(device)` resolves `auto` (the default everywhere, `DEFAULT_DTYPE`): on CUDA
bf16 (fp32 on GPUs without bf16 support); on a CPU it times one small bf16 and fp32 matmul (a few
tens of ms, once: the result is cached in memory and in `<cache dir>/compute_dtype.json`, keyed by
CPU model, its bf16 flags and the torch version) and picks bf16 only when bf16 is at most
`BF16_SLOWDOWN_LIMIT` times slower than fp32. Each choice comes with a plain-words reason.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from crossdiff_core.errors import CrossDiffError
from crossdiff_core.files import cache_dir, write_text_atomically

if TYPE_CHECKING:  # torch is imported where it is used: the CLI reads the constants below without it
    import torch

log = logging.getLogger(__name__)

DEFAULT_DTYPE = "auto"
"""The compute dtype models load with unless told otherwise (CLI `--dtype`, `load_model(dtype=...)`)."""

DTYPES = ("bf16", "fp32", "fp16")
"""The concrete compute dtypes by name (`torch_dtype(name)` gives the torch dtype)."""

DTYPE_CHOICES = ("auto", *DTYPES)
"""What a user may ask for: `auto` or a concrete dtype."""

BF16_SLOWDOWN_LIMIT = 1.5
"""On a CPU, bf16 is chosen only when a bf16 matmul takes at most this many times as long as fp32."""

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
"""/proc/cpuinfo flags of CPU instructions for bf16 arithmetic (x86 AVX-512 BF16 and AMX; Arm `bf16`)."""

CACHE_FILE = "compute_dtype.json"
_CACHE_FORMAT = 1
# A matmul the size of one token batch through a small model's projection: big enough to hit the
# GEMM kernels, small enough that an emulated bf16 product still takes only tens of milliseconds.
_MATMUL_SHAPE = (32, 512, 512)


@dataclass(frozen=True)
class MatmulTiming:
    """Seconds of one `[m, k] @ [k, n]` matmul in bf16 and in fp32 (best of a few)."""

    bf16_s: float
    fp32_s: float
    flops: float

    @property
    def slowdown(self) -> float:
        """How many times longer bf16 takes than fp32."""
        return self.bf16_s / max(self.fp32_s, 1e-12)

    @property
    def bf16_gflops(self) -> float:
        return self.flops / max(self.bf16_s, 1e-12) / 1e9

    @property
    def fp32_gflops(self) -> float:
        return self.flops / max(self.fp32_s, 1e-12) / 1e9


@dataclass(frozen=True)
class ComputeDtype:
    """A resolved compute dtype and why it was chosen."""

    dtype: str
    """`bf16`, `fp32` or `fp16`."""

    reason: str
    """Why this dtype, in plain words that read after "computing in fp32: " (shown by `info` and the app)."""

    requested: str = DEFAULT_DTYPE
    """What was asked for: `auto` or a concrete dtype."""

    timing: MatmulTiming | None = None
    """The bf16/fp32 matmul timing the choice rests on (CPU `auto` only)."""

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch_dtype(self.dtype)

    def to_dict(self) -> dict:
        """Return the choice as JSON-serializable values (GFLOP/s included when timed)."""
        data = {"dtype": self.dtype, "reason": self.reason, "requested": self.requested}
        if self.timing is not None:
            data["bf16_gflops"] = round(self.timing.bf16_gflops, 2)
            data["fp32_gflops"] = round(self.timing.fp32_gflops, 2)
        return data


def torch_dtype(name: str) -> torch.dtype:
    """Return the torch dtype of a concrete compute dtype name (bf16, fp32, fp16)."""
    import torch

    return {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}[name]


def dtype_name(dtype: torch.dtype) -> str:
    """Return the short name (bf16, fp32, fp16) of a torch dtype; other dtypes by their torch name."""
    return next((name for name in DTYPES if torch_dtype(name) == dtype), str(dtype).removeprefix("torch."))


# ---------------------------------------------------------------------------- what the CPU has


def cpu_model() -> str:
    """Return the CPU's model name (`model name` in /proc/cpuinfo, else what platform reports)."""
    for line in _cpuinfo().splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("model name", "hardware", "cpu model") and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags() -> set[str]:
    """Return the CPU's feature flags (x86 `flags`, Arm `Features`) from /proc/cpuinfo; empty when unknown."""
    for line in _cpuinfo().splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return set(value.split())
    return set()


def cpu_bf16_flags(flags: set[str] | None = None) -> list[str]:
    """Return which bf16 instruction flags (`BF16_CPU_FLAGS`) the CPU has."""
    flags = cpu_flags() if flags is None else flags
    return [flag for flag in BF16_CPU_FLAGS if flag in flags]


def cpu_description() -> dict:
    """Return the CPU model, torch's CPU capability (e.g. AVX2, AVX512) and its bf16 flags."""
    import torch

    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        capability = None
    flags = cpu_flags()
    simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return {
        "model": cpu_model(),
        "torch_capability": capability,
        "simd_flags": simd,
        "bf16_flags": cpu_bf16_flags(flags),
        "cores": os.cpu_count(),
    }


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


# ---------------------------------------------------------------------------- timing


def time_matmuls(shape: tuple[int, int, int] = _MATMUL_SHAPE, repeats: int = 5) -> MatmulTiming:
    """Time one `[m, k] @ [k, n]` matmul in fp32 and bf16 on one CPU thread; return the best times.

    fp32 runs `repeats` times; bf16 runs after one warm-up call, at most 3 times, and stops after
    the first when it is already 5 times slower than fp32 (an emulated bf16 product is tens of
    times slower, and each call then costs tens of milliseconds).
    """
    import torch

    m, k, n = shape
    generator = torch.Generator().manual_seed(0)
    a32, b32 = torch.randn(m, k, generator=generator), torch.randn(k, n, generator=generator)
    a16, b16 = a32.bfloat16(), b32.bfloat16()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a busy machine a multi-threaded product waits for descheduled threads
    try:
        with torch.no_grad():
            torch.mm(a32, b32)
            fp32 = min(_seconds(a32, b32) for _ in range(max(1, repeats)))
            torch.mm(a16, b16)
            bf16 = _seconds(a16, b16)
            if bf16 <= 5 * fp32:
                bf16 = min(bf16, *(_seconds(a16, b16) for _ in range(2)))
    finally:
        torch.set_num_threads(threads)
    return MatmulTiming(bf16_s=bf16, fp32_s=fp32, flops=2.0 * m * k * n)


def _seconds(a: torch.Tensor, b: torch.Tensor) -> float:
    import torch

    start = time.perf_counter()
    torch.mm(a, b)
    return time.perf_counter() - start


# ---------------------------------------------------------------------------- the choice


def choose(
    device: str | torch.device = "cpu",
    requested: str = DEFAULT_DTYPE,
    timing: MatmulTiming | None = None,
    bf16_flags: list[str] | None = None,
    cuda_bf16: bool | None = None,
) -> ComputeDtype:
    """Return the compute dtype for `device` from given facts (no timing or probing happens here).

    `timing`: the CPU's bf16/fp32 matmul timing; `bf16_flags`: the CPU's bf16 instruction flags
    (only for the wording); `cuda_bf16`: whether the GPU supports bf16 (None = assume it does).
    """
    import torch

    requested = (requested or DEFAULT_DTYPE).lower()
    if requested not in DTYPE_CHOICES:
        raise CrossDiffError(f"unknown compute dtype {requested!r}: choose one of {', '.join(DTYPE_CHOICES)}")
    if requested != "auto":
        return ComputeDtype(requested, f"asked for (--dtype {requested})", requested)
    kind = torch.device(device).type
    if kind == "cuda":
        if cuda_bf16 is False:
            return ComputeDtype("fp32", "this GPU has no bf16 support", requested)
        return ComputeDtype("bf16", "the GPU computes bf16 as fast as fp32, in half the memory", requested)
    if kind != "cpu":
        return ComputeDtype("bf16", f"the default on {kind}", requested)
    if timing is None:
        if bf16_flags:
            return ComputeDtype("bf16", f"this CPU has bf16 instructions ({', '.join(bf16_flags)})", requested)
        return ComputeDtype("fp32", "this CPU has no bf16 instructions", requested)
    speeds = f"{timing.bf16_gflops:.1f} vs {timing.fp32_gflops:.1f} GFLOP/s on one core"
    if timing.slowdown <= BF16_SLOWDOWN_LIMIT:
        has = f" ({', '.join(bf16_flags)})" if bf16_flags else ""
        return ComputeDtype(
            "bf16",
            f"this CPU computes bf16 fast{has}: a bf16 matmul runs at {1 / timing.slowdown:.1f}× the speed "
            f"of fp32 ({speeds}), in half the memory",
            requested,
            timing,
        )
    start = "this CPU has no bf16 instructions" if not bf16_flags else "this CPU computes bf16 slowly"
    return ComputeDtype(
        "fp32",
        f"{start}: a bf16 matmul runs {timing.slowdown:.0f}× slower than fp32 here ({speeds})",
        requested,
        timing,
    )


_lock = threading.Lock()
_memo: dict[str, ComputeDtype] = {}


def pick_compute_dtype(
    device: str | torch.device | None = "cpu",
    requested: str | None = DEFAULT_DTYPE,
    use_cache: bool = True,
    cache_file: str | os.PathLike | None = None,
) -> ComputeDtype:
    """Return the compute dtype for `device` (`auto`/None = CUDA when available, else CPU) and `requested`.

    `requested` other than `auto` is returned as is. For `auto` on a CPU, the bf16/fp32 timing is
    measured once per process; with `use_cache` it is also read from and written to `cache_file`
    (default `<CrossDiff cache dir>/compute_dtype.json`), keyed by CPU model, bf16 flags and torch version.
    """
    import torch

    requested = (requested or DEFAULT_DTYPE).lower()
    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    kind = torch.device(device).type
    if requested != "auto" or kind != "cpu":
        cuda_bf16 = None
        if kind == "cuda" and requested == "auto" and torch.cuda.is_available():
            cuda_bf16 = bool(torch.cuda.is_bf16_supported())
        return choose(device, requested, cuda_bf16=cuda_bf16)
    flags = cpu_bf16_flags()
    key = cache_key(flags)
    with _lock:
        if use_cache and key in _memo:
            return _memo[key]
        path = Path(cache_file) if cache_file is not None else _default_cache_file()
        timing = read_cached_timing(path, key) if use_cache and path is not None else None
        if timing is None:
            try:
                timing = time_matmuls()
            except RuntimeError as error:  # a build without CPU bf16 kernels: decide from the flags alone
                log.warning("could not time a bf16 matmul (%s); choosing from the CPU flags", error)
            if timing is not None and use_cache and path is not None:
                write_cached_timing(path, key, timing)
        picked = choose("cpu", "auto", timing, flags)
        if use_cache:
            _memo[key] = picked
    log.info("computing in %s: %s", picked.dtype, picked.reason)
    return picked


def cache_key(flags: list[str] | None = None) -> str:
    """Return the key a CPU timing is cached under: CPU model, its bf16 flags and the torch version."""
    import torch

    flags = cpu_bf16_flags() if flags is None else flags
    return f"{cpu_model()}|{','.join(flags) or 'no-bf16-flags'}|torch {torch.__version__}"


def read_cached_timing(path: str | os.PathLike, key: str) -> MatmulTiming | None:
    """Return the timing cached under `key` in `path`, or None (missing, unreadable or other key)."""
    try:
        data = json.loads(Path(path).read_text())
        entry = data["timings"][key] if data.get("format") == _CACHE_FORMAT else None
        return None if entry is None else MatmulTiming(**{k: float(entry[k]) for k in ("bf16_s", "fp32_s", "flops")})
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def write_cached_timing(path: str | os.PathLike, key: str, timing: MatmulTiming) -> None:
    """Add `timing` under `key` to the cache file `path` (atomically; a failure to write is only logged)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        if data.get("format") != _CACHE_FORMAT or not isinstance(data.get("timings"), dict):
            raise ValueError("other format")
    except (OSError, ValueError, AttributeError):
        data = {"format": _CACHE_FORMAT, "timings": {}}
    data["timings"][key] = asdict(timing)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(path, json.dumps(data, indent=1))
    except (OSError, CrossDiffError) as error:  # a full disk (DiskFullError) too: the cache only saves time
        log.debug("could not cache the compute-dtype timing in %s: %s", path, error)


def _default_cache_file() -> Path | None:
    try:
        return cache_dir() / CACHE_FILE
    except OSError:
        return None


def clear_memo() -> None:
    """Forget the in-process choices (the next `pick_compute_dtype` reads the cache file or times again)."""
    with _lock:
        _memo.clear()
