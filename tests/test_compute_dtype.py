"""The compute dtype models load with: bf16 where the hardware runs it fast, fp32 on CPUs without bf16 instructions."""

from __future__ import annotations

import json
import time

import pytest
import torch

from crossdiff_core import compute_dtype
from crossdiff_core.compute_dtype import (
    BF16_SLOWDOWN_LIMIT,
    DEFAULT_DTYPE,
    MatmulTiming,
    cache_key,
    choose,
    pick_compute_dtype,
    read_cached_timing,
    write_cached_timing,
)
from crossdiff_core.embedding_storage import STORAGE_DTYPE
from crossdiff_core.errors import CrossDiffError

SLOW = MatmulTiming(bf16_s=0.058, fp32_s=0.001, flops=2e7)  # bf16 58× slower: AVX2 only, bf16 emulated
FAST = MatmulTiming(bf16_s=0.0008, fp32_s=0.001, flops=2e7)  # bf16 faster than fp32: AMX / AVX-512 BF16


@pytest.fixture(autouse=True)
def fresh_memo():
    """Each test starts without the in-process choice (and leaves none behind)."""
    compute_dtype.clear_memo()
    yield
    compute_dtype.clear_memo()


def test_default_is_auto_everywhere():
    import inspect

    from crossdiff_core.cli.args import build_parser
    from crossdiff_core.models import load_model

    assert DEFAULT_DTYPE == "auto"
    assert inspect.signature(load_model).parameters["dtype"].default == DEFAULT_DTYPE
    args = build_parser().parse_args(["harvest", "--model-a", "a", "--model-b", "b", "--out", "x"])
    assert args.dtype == DEFAULT_DTYPE
    args = build_parser().parse_args(["harvest", "--model-a", "a", "--model-b", "b", "--out", "x", "--dtype", "fp16"])
    assert args.dtype == "fp16"


def test_slow_bf16_on_a_cpu_gives_fp32_with_the_reason():
    picked = choose("cpu", "auto", SLOW, bf16_flags=[])
    assert picked.dtype == "fp32" and picked.timing == SLOW
    assert "no bf16 instructions" in picked.reason and "58× slower than fp32" in picked.reason
    assert "0.3 vs 20.0 GFLOP/s" in picked.reason
    assert choose("cpu", "auto", SLOW, bf16_flags=["avx512_bf16"]).dtype == "fp32"  # flags alone do not decide


def test_fast_bf16_on_a_cpu_gives_bf16():
    picked = choose("cpu", "auto", FAST, bf16_flags=["amx_bf16"])
    assert picked.dtype == "bf16" and "amx_bf16" in picked.reason and "fast" in picked.reason
    limit = MatmulTiming(bf16_s=BF16_SLOWDOWN_LIMIT * 0.001, fp32_s=0.001, flops=2e7)
    assert choose("cpu", "auto", limit).dtype == "bf16"  # up to 1.5× slower still counts as fast
    assert choose("cpu", "auto", MatmulTiming(bf16_s=0.0016, fp32_s=0.001, flops=2e7)).dtype == "fp32"


def test_without_a_timing_the_cpu_flags_decide():
    assert choose("cpu", "auto", None, bf16_flags=["avx512_bf16"]).dtype == "bf16"
    assert choose("cpu", "auto", None, bf16_flags=[]).dtype == "fp32"


def test_an_explicit_dtype_overrides_the_choice():
    for dtype in ("bf16", "fp32", "fp16"):
        picked = choose("cpu", dtype, SLOW)
        assert picked.dtype == dtype and picked.requested == dtype and "--dtype" in picked.reason
        assert pick_compute_dtype("cpu", dtype).dtype == dtype  # no timing needed
    assert pick_compute_dtype("cpu", "bf16").torch_dtype == torch.bfloat16
    with pytest.raises(CrossDiffError, match="unknown compute dtype 'int4'"):
        choose("cpu", "int4")


def test_cuda_computes_in_bf16():
    assert choose("cuda").dtype == "bf16"
    assert choose("cuda:1", "auto", SLOW).dtype == "bf16"  # a CPU timing has no say on a GPU
    assert choose("cuda", cuda_bf16=False).dtype == "fp32"  # pre-Ampere GPUs
    assert pick_compute_dtype("cuda").dtype == (
        "bf16" if not torch.cuda.is_available() or torch.cuda.is_bf16_supported() else "fp32"
    )


def test_cached_timing_round_trips_and_decides(tmp_path):
    path = tmp_path / "compute_dtype.json"
    key = cache_key()
    assert read_cached_timing(path, key) is None
    write_cached_timing(path, key, SLOW)
    write_cached_timing(path, "another CPU|amx_bf16|torch 0", FAST)
    assert read_cached_timing(path, key) == SLOW
    assert read_cached_timing(path, "another CPU|amx_bf16|torch 0") == FAST
    assert set(json.loads(path.read_text())["timings"]) == {key, "another CPU|amx_bf16|torch 0"}

    picked = pick_compute_dtype("cpu", cache_file=path)
    assert picked.dtype == "fp32" and picked.timing == SLOW  # read from the file, not timed again
    write_cached_timing(path, key, FAST)
    assert pick_compute_dtype("cpu", cache_file=path).timing == SLOW  # the in-process choice holds
    compute_dtype.clear_memo()
    assert pick_compute_dtype("cpu", cache_file=path).dtype == "bf16"


def test_a_damaged_cache_file_is_timed_again_and_rewritten(tmp_path):
    path = tmp_path / "compute_dtype.json"
    path.write_text('{"format": 1, "timings": {')
    assert read_cached_timing(path, cache_key()) is None
    picked = pick_compute_dtype("cpu", cache_file=path)
    assert picked.timing is not None
    assert read_cached_timing(path, cache_key()) == picked.timing


def _one_thread_seconds(a: torch.Tensor, b: torch.Tensor, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return best


def test_the_choice_on_this_cpu_agrees_with_a_real_timing(tmp_path):
    picked = pick_compute_dtype("cpu", use_cache=False)
    assert picked.dtype in ("bf16", "fp32") and picked.timing is not None and picked.reason
    a = torch.randn(64, 768)
    b = torch.randn(768, 768)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.mm(a, b), torch.mm(a.bfloat16(), b.bfloat16())
        fp32 = _one_thread_seconds(a, b, 5)
        bf16 = _one_thread_seconds(a.bfloat16(), b.bfloat16(), 2)
    finally:
        torch.set_num_threads(threads)
    slowdown = bf16 / fp32
    if slowdown > 3:
        assert picked.dtype == "fp32", f"bf16 is {slowdown:.1f}× slower here, yet {picked.reason}"
    elif slowdown < 1.2:
        assert picked.dtype == "bf16", f"bf16 is {slowdown:.2f}× the fp32 time here, yet {picked.reason}"


def test_the_cpu_is_described():
    description = compute_dtype.cpu_description()
    assert description["model"] and isinstance(description["bf16_flags"], list)
    assert set(description["bf16_flags"]) <= set(compute_dtype.BF16_CPU_FLAGS)


def test_demo_models_load_with_the_automatic_dtype(demo_pair):
    """The demo pair (loaded once per session with the default dtype) computes in the dtype picked for the CPU."""
    expected = pick_compute_dtype("cpu")
    for model in demo_pair:
        assert model.compute_dtype == expected.dtype and model.compute_dtype_reason
        norms = [p for name, p in model.model.named_parameters() if "norm" in name]
        assert norms and {p.dtype for p in norms} == {expected.torch_dtype}
        # a 4-bit model keeps its embeddings in bf16 when it computes in a wider dtype (embedding_storage)
        stored = min(expected.torch_dtype, STORAGE_DTYPE, key=lambda dtype: dtype.itemsize)
        assert model.model.get_input_embeddings().weight.dtype == stored
    ids = demo_pair[0].tokenizer(["Which dtype?"], return_tensors="pt").input_ids
    assert torch.isfinite(demo_pair[0].activations(ids)).all()


def test_info_names_the_compute_dtype(capsys):
    from crossdiff_core.cli import main

    assert main(["info", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    expected = pick_compute_dtype(summary["compute_device"])
    assert (summary["compute_dtype"], summary["compute_dtype_reason"]) == (expected.dtype, expected.reason)
    assert main(["info"]) == 0
    assert f"compute_dtype: {expected.dtype}" in capsys.readouterr().out
