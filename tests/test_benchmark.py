"""The benchmark scripts still run against the engine they measure (tiny sizes, made-up images)."""

import json
import subprocess
import sys

from conftest import ROOT


def test_throughput_script_prints_a_table_and_the_target_ratios(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "throughput.py"),
            "--archive",
            str(tmp_path / "absent.tar.gz"),
            "--device",
            "cpu",
            "--only",
            "resnet18@32",
            "--steps",
            "1",
            "--rounds",
            "1",
            "--batch-size",
            "8",
            "--input-images",
            "16",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert any(line.startswith("| ResNet-18 32 px (batch 8) |") for line in lines)
    result = json.loads(lines[-1])
    assert result["device"].startswith("CPU") and result["images"].startswith("random")
    for key in ("input_speedup_32", "train_ratio", "eval_ratio"):
        assert result[key] > 0


def test_train_real_reports_accuracy_rate_flops_and_the_recipe_time(tmp_path):
    """benchmarks/train_real.py on a folder of real JPEG files in the archive's layout (train/<class>/*.jpg)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("airplane", "cat"):
        (tmp_path / "train" / name).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                tmp_path / "train" / name / f"{i}.jpg"
            )
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "train_real.py"),
            "--archive",
            str(tmp_path),
            "--model",
            "resnet18",
            "--img-size",
            "32",
            "--images",
            "24",
            "--val-size",
            "8",
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--device",
            "cpu",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [e["epoch"] for e in result["epochs"]] == [1, 2]
    # forward + backward = 3 forwards; ResNet-18's forward at 32 px is 0.074 GFLOPs (224 px's 3.6 x (32/224)^2)
    assert abs(result["train_gflops_per_image"] / 3 - 0.074) < 0.005, result["train_gflops_per_image"]
    assert result["achieved_tflops"] > 0 and result["share_of_peak"] is None  # no peak known for a CPU
    assert set(result["projected_recipe_s"]) == {"train", "transfer"} and result["projected_recipe_s"]["train"] > 0
