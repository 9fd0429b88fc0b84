"""benchmarks/throughput.py still runs against the engine it measures (tiny sizes, random images)."""

import json
import subprocess
import sys

from conftest import ROOT


def test_throughput_script_prints_a_table_and_the_target_ratios(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--archive", str(tmp_path / "absent.tar.gz"),
         "--device", "cpu", "--only", "resnet18@32", "--steps", "1", "--rounds", "1", "--batch-size", "8",
         "--input-images", "16", "--json"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert any(line.startswith("| ResNet-18 32 px (batch 8) |") for line in lines)
    result = json.loads(lines[-1])
    assert result["device"].startswith("CPU") and result["images"].startswith("random")
    for key in ("input_speedup_32", "train_ratio", "eval_ratio"):
        assert result[key] > 0
