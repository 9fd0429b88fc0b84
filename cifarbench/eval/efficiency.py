"""What a model costs at inference: FLOPs, throughput and latency.

- FLOPs: torch.utils.flop_counter over one forward pass of one image at the
  model's img_size. The counter counts a multiply-add as 2 FLOPs (ResNet-18 at
  224 px: 3.63 GFLOPs = 1.82 GMACs); GFLOPs here are its total / 1e9. Attention
  runs on PyTorch's math backend while counting, so its matrix products are
  counted on every device (the fused CPU attention kernel is not in the
  counter's table and would count as 0).
- Throughput: images/s through `inference.infer` (on-device resize and
  normalisation included, as evaluate runs it) at the evaluation batch size.
- Latency: one image through the same path, median of repeated runs after a
  warm-up. Both synchronise the GPU before reading the clock.
Peak memory is memory.py's.
"""

import statistics
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from cifarbench.models import inference

THROUGHPUT_WARMUP = 1  # batches
THROUGHPUT_MIN_RUNS = 3
LATENCY_WARMUP = 5  # single images
LATENCY_MIN_RUNS = 20
# evaluate.timing_seconds is the least clock time both measurements take together: three quarters
# for throughput (the number the report compares), a quarter for latency
THROUGHPUT_SHARE = 0.75
TIMING_SECONDS = 2.0  # params.yaml's default
MAX_RUNS = 200


def count_flops(model, input_shape, device="cpu"):
    """FLOPs of one forward pass on a zero input of `input_shape` (multiply-add = 2)."""
    model.eval()
    x = torch.zeros(input_shape, device=device)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def gflops(model, img_size, device="cpu"):
    """Forward GFLOPs of one image at img_size."""
    return count_flops(model, (1, 3, img_size, img_size), device) / 1e9


def _synchronize(device):
    kind = torch.device(device).type
    if kind == "cuda":
        torch.cuda.synchronize(device)
    elif kind == "mps":  # Metal runs asynchronously too: time only finished work
        torch.mps.synchronize()


def time_runs(fn, device, *, warmup, min_runs, min_seconds, max_runs=MAX_RUNS):
    """Seconds of each call of fn() after `warmup` untimed calls: at least min_runs and min_seconds in all."""
    for _ in range(warmup):
        fn()
    _synchronize(device)
    times = []
    start = time.perf_counter()
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() - start < min_seconds):
        t0 = time.perf_counter()
        fn()
        _synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def throughput(model, images, preprocess, runtime, batch_size, min_seconds=THROUGHPUT_SHARE * TIMING_SECONDS):
    """Images/s for full batches of batch_size uint8 images (repeated from `images` when there are fewer)."""
    batch = images[torch.arange(batch_size, device=images.device) % len(images)]
    times = time_runs(
        lambda: inference.infer(model, batch, preprocess, runtime, batch_size),
        runtime.device,
        warmup=THROUGHPUT_WARMUP,
        min_runs=THROUGHPUT_MIN_RUNS,
        min_seconds=min_seconds,
    )
    return batch_size * len(times) / sum(times)


def latency_ms(model, images, preprocess, runtime, min_seconds=(1 - THROUGHPUT_SHARE) * TIMING_SECONDS):
    """Median milliseconds for one image (batch of 1) after a warm-up."""
    single = images[:1]
    times = time_runs(
        lambda: inference.infer(model, single, preprocess, runtime, 1),
        runtime.device,
        warmup=LATENCY_WARMUP,
        min_runs=LATENCY_MIN_RUNS,
        min_seconds=min_seconds,
    )
    return 1000 * statistics.median(times)


def measure(model, images, preprocess, runtime, batch_size, img_size, seconds=TIMING_SECONDS):
    """GFLOPs, throughput and latency of a model in eval mode; images: uint8 (N, 3, H, W) on the device.

    seconds: the least clock time the two timings take together (evaluate.timing_seconds)."""
    share = THROUGHPUT_SHARE * seconds
    return {
        "gflops": round(gflops(model, img_size, runtime.device), 6),
        "throughput": round(throughput(model, images, preprocess, runtime, batch_size, share), 2),
        "latency_ms": round(latency_ms(model, images, preprocess, runtime, seconds - share), 3),
        "eval_batch_size": batch_size,
        "img_size": img_size,
        "latency_runs": f"median of at least {LATENCY_MIN_RUNS} runs after {LATENCY_WARMUP} warm-up runs",
    }
