"""The training paths on a GPU, as ratios measured side by side in one run: `python -m benchmarks.gpu`.

Needs a CUDA device; writes `benchmarks/results/gpu.json` (or `--out`) and prints a table.

- **training step**: the DFC step (`training.losses.training_loss`, fused Adam) against the dense
  reference step of `benchmarks.perf` (full matrices with masks, the way published crosscoder code
  does it), each in lock step on the same batches, and against the bare encoder matmuls: at the demo
  pair's widths (576/640) and at the widths of a 7–8B pair (4096/3584), in fp32;
- **end to end**: `training.loop.train` on the synthetic benchmark's data (`benchmarks.synthetic`,
  the DFC with 5% exclusive blocks, seed 0) on the GPU, with its recovery scores beside the CPU run
  recorded in `benchmarks/synthetic/results.json`: the GPU path must learn the same dictionary.
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import torch

from benchmarks.perf import bench_train_size

RESULTS = Path(__file__).resolve().parent / "results" / "gpu.json"
STEP_SIZES = (
    # (name, d_a, d_b, dict_size, batch, k, steps)
    ("demo widths, F=8192, batch 1024", 576, 640, 8192, 1024, 32, 40),
    ("demo widths, F=65536, batch 4096", 576, 640, 65536, 4096, 64, 30),
    ("7-8B widths, F=65536, batch 4096", 4096, 3584, 65536, 4096, 64, 20),
)
END_TO_END_VARIANT = "dfc-5%"


def bench_steps(device: str) -> list[dict]:
    """Return the step comparison at each of `STEP_SIZES` on `device`."""
    rows = []
    for name, d_a, d_b, dict_size, batch, k, steps in STEP_SIZES:
        row = bench_train_size(dict_size, steps, d_a=d_a, d_b=d_b, batch=batch, k=k, device=device)
        rows.append({"setting": name, "d_a": d_a, "d_b": d_b, "batch": batch, "k": k, **row})
        print(
            f"{name}: DFC {row['dfc_tokens_per_s']:,.0f} tokens/s · {row['speedup_vs_dense']:.1f}× the dense step · "
            f"{row['fraction_of_encoder_limit']:.2f} of the encoder limit · final loss gap "
            f"{row['loss_rel_diff_final']:.1%}",
            flush=True,
        )
    return rows


def bench_end_to_end(device: str) -> dict:
    """Return the synthetic benchmark's DFC run on `device`, beside the CPU run of the same variant and seed."""
    from benchmarks.synthetic.run import FULL, VARIANTS, run_one

    variant = next(v for v in VARIANTS if v.name == END_TO_END_VARIANT)
    start = time.perf_counter()
    gpu = run_one(FULL, variant, 0, device=device)
    gpu.pop("latents", None)
    seconds = time.perf_counter() - start
    recorded = json.loads((Path(__file__).resolve().parent / "synthetic" / "results.json").read_text())
    cpu = next(
        (
            r
            for r in recorded["runs"]
            if r["variant"] == variant.name and r["seed"] == 0 and r.get("table", "main") == "main"
        ),
        {},
    )
    keys = [k for k, v in gpu.items() if isinstance(v, (int, float)) and k in cpu]
    print(f"end to end ({variant.name}, {FULL.steps} steps): {seconds:.1f} s on {device}", flush=True)
    for key in keys:
        print(f"  {key}: gpu {gpu[key]:.4g} · cpu {cpu[key]:.4g}", flush=True)
    return {"variant": variant.name, "steps": FULL.steps, "seconds": seconds, "gpu": gpu, "cpu_recorded": cpu}


def main(argv: list[str] | None = None) -> int:
    """Run both sections on the first CUDA device and write the JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--only", choices=["steps", "end_to_end"], nargs="+", default=["steps", "end_to_end"])
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks.gpu needs a CUDA device; none is visible to torch")
    results: dict = {
        "device": torch.cuda.get_device_name(args.device),
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 figures are fp32, as on the CPU
    if "steps" in args.only:
        results["steps"] = bench_steps(args.device)
    if "end_to_end" in args.only:
        results["end_to_end"] = bench_end_to_end(args.device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
