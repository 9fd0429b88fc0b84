"""Efficiency measures against hand-computed values: FLOPs of known layers, timings of a known delay."""

import time

import pytest
import torch

from cifarbench.data.transforms import Preprocess
from cifarbench.eval import efficiency
from cifarbench.runtime import memory
from cifarbench.runtime.device import Runtime


def test_flops_of_a_single_convolution():
    # 8 output channels x 4x4 positions, each 3x3x3 multiply-adds, 2 FLOPs per multiply-add
    conv = torch.nn.Conv2d(3, 8, kernel_size=3, padding=1, bias=False)
    assert efficiency.count_flops(conv, (1, 3, 4, 4)) == 2 * 8 * 16 * 27 == 6912
    assert efficiency.gflops(conv, 4) == pytest.approx(6912 / 1e9)


def test_flops_of_a_single_linear_layer():
    assert efficiency.count_flops(torch.nn.Linear(10, 5), (1, 10)) == 2 * 10 * 5


def test_attention_is_counted_on_cpu():
    class Attention(torch.nn.Module):
        def forward(self, x):
            q = x.view(1, 2, 5, 4)  # batch 1, 2 heads, 5 tokens, 4 dims
            return torch.nn.functional.scaled_dot_product_attention(q, q, q)

    # q @ k^T and attn @ v: 2 products of 2 heads x 5 x 5 x 4 multiply-adds, 2 FLOPs each
    assert efficiency.count_flops(Attention(), (1, 40)) == 2 * (2 * 5 * 5 * 4) * 2


class Sleeper(torch.nn.Module):
    """A 'model' that takes `seconds` per call, whatever the batch."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def forward(self, x):
        time.sleep(self.seconds)
        return x.flatten(1)[:, :3]


@pytest.fixture
def quick(monkeypatch):
    monkeypatch.setattr(efficiency, "LATENCY_MIN_RUNS", 5)
    return Runtime(device=torch.device("cpu"), amp_dtype=None, compile=False), Preprocess(8, (0.5,) * 3, (0.5,) * 3)


def test_latency_is_the_median_time_of_one_image(quick):
    rt, preprocess = quick
    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    ms = efficiency.latency_ms(Sleeper(0.02), images, preprocess, rt, min_seconds=0.2)
    assert 20 <= ms < 40


def test_throughput_counts_images_of_full_batches(quick):
    rt, preprocess = quick
    images = torch.zeros(3, 3, 8, 8, dtype=torch.uint8)  # fewer than a batch: repeated to fill it
    rate = efficiency.throughput(Sleeper(0.02), images, preprocess, rt, batch_size=8, min_seconds=0.2)
    assert 8 / 0.05 < rate <= 8 / 0.02  # 8 images per call of a little over 20 ms


def test_time_runs_honours_minimum_runs_and_seconds():
    calls = []
    times = efficiency.time_runs(lambda: calls.append(1), "cpu", warmup=2, min_runs=7, min_seconds=0)
    assert len(times) == 7 and len(calls) == 9
    times = efficiency.time_runs(lambda: time.sleep(0.01), "cpu", warmup=0, min_runs=1, min_seconds=0.1)
    assert 0.1 <= sum(times) < 0.3 and len(times) >= 5


def test_peak_memory_on_cpu_is_the_process_peak_rss():
    import psutil

    peak, measure = memory.peak("cpu")
    assert measure == "process peak RSS"
    assert peak >= psutil.Process().memory_info().rss / 2**20 * 0.99
