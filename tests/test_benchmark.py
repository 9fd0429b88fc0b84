"""The benchmark scripts still run against the engine they measure (tiny sizes, made-up images)."""

import json
import re
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


def jpeg_folder(root, per_class=5):
    """A folder in the CIFAR-10 JPEG archive's layout, train/<class>/NNNN.jpg, of random images."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"):
        (root / "train" / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "train" / name / f"{i}.jpg")
    return root


def real_benchmark(tmp_path, *args, here=False):
    """benchmarks/real_benchmark.py on the tiny params, in a process (or, `here`, in this one: for its errors, which
    come before any work; a process would spend seconds importing torch and timm first)."""
    from conftest import dump, run_script_here, tiny_params

    (tmp_path / "params.yaml").write_text(dump(tiny_params()))
    script = ROOT / "benchmarks" / "real_benchmark.py"
    args = ("--params", str(tmp_path / "params.yaml"), *args)
    if here:
        return run_script_here(tmp_path, script, *args)
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )


def test_real_benchmark_runs_every_stage_and_projects_the_recipe(tmp_path):
    """The whole pipeline in-process at a CPU's size: every stage of every model measured, and projected."""
    archive = jpeg_folder(tmp_path / "jpegs")
    # two of the committed models: a CNN and the ViT (one more adds its nine stages and tests nothing new)
    proc = real_benchmark(
        tmp_path,
        *("--archive", str(archive), "--images", "300", "--img-size", "32", "--device", "cpu", "--json"),
        *("--models", "resnet18,dinov2_vitb14"),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["device"].startswith("CPU") and result["complete"] and result["epochs"] == 1
    # 32 px is no multiple of the (tiny) ViT's 7 px patch: the nearest size it takes
    assert result["img_sizes"] == {"resnet18": 32, "dinov2_vitb14": 35}
    rows = result["stages"]
    models = ["resnet18", "dinov2_vitb14"]
    expected = []
    for model in models:  # one model's chain after the other, the report last
        expected += [("train-cifar10", model, "cifar10"), ("transfer-cifar100", model, "cifar100")]
        expected += [(stage, model, d) for stage in ("evaluate", "embed", "probe") for d in ("cifar10", "cifar100")]
    assert [(r["stage"], r["model"], r["dataset"]) for r in rows] == expected + [("report", None, None)]
    scale, start = 50000 / 300, result["process_start_s"]
    for r in rows:
        assert r["seconds"] > 0 and r["projected_seconds"] >= start + r["seconds"] - 0.1, r
        if r["stage"] in ("train-cifar10", "transfer-cifar100"):
            # the tiny recipe's 2 epochs, each over 50,000 / 300 times the images: 1 run, 2 x scale - 1 to come
            assert r["recipe_epochs"] == 2
            projected = start + r["seconds"] + r["steady_epoch_s"] * (2 * scale - 1)
            assert abs(r["projected_seconds"] - projected) < 0.2 + 0.01 * projected, r
    assert abs(result["projected_total_s"] - sum(r["projected_seconds"] for r in rows)) < 0.5
    # the table: a row per stage, the total, the projection in minutes
    lines = proc.stdout.splitlines()
    table = [line for line in lines if line.startswith("| ")]
    assert len(table) == 2 + len(rows) + 1 and table[-1].startswith("| total")
    assert table[2].split("|")[1:4] == [" train-cifar10     ", " resnet18         ", " cifar10  "]
    # the text's whole seconds and the JSON's tenth of a second round the same total
    [printed] = re.findall(r"^projected `dvc repro`: (\d+) s", proc.stdout, re.M)
    assert abs(int(printed) - result["projected_total_s"]) <= 0.55
    assert "CIFAR-100 is the same images under 100 labels" in proc.stdout and "random init" in proc.stdout


def test_real_benchmark_refuses_bad_input_in_one_line_and_stops_at_its_budget(tmp_path):
    archive = jpeg_folder(tmp_path / "jpegs", per_class=2)
    proc = real_benchmark(tmp_path, "--archive", str(tmp_path / "absent.tar.gz"), here=True)
    assert proc.returncode == 1 and proc.stderr.strip() == (
        f"error: {tmp_path / 'absent.tar.gz'} not found; pass the CIFAR-10 JPEG archive (or its folder) with --archive"
    )
    proc = real_benchmark(tmp_path, "--archive", str(archive), "--models", "resnet18,vgg", here=True)
    assert proc.returncode == 2 and "--models: vgg not in" in proc.stderr.strip().splitlines()[-1]
    proc = real_benchmark(
        tmp_path, "--archive", str(archive), "--images", "100", "--device", "cpu", "--budget", "0", "--json"
    )
    assert proc.returncode == 1  # an incomplete measurement is not a success
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not result["complete"] and result["projected_total_s"] == 0
    assert {r["skipped"] for r in result["stages"]} == {"over --budget"} and len(result["stages"]) == 25


def test_lbfgs_step_times_both_forms_of_the_step_and_prints_their_ratio():
    command = [sys.executable, str(ROOT / "benchmarks" / "lbfgs_step.py")]
    small = ["--groups", "2", "--features", "16", "--classes", "5", "--steps", "3", "--rounds", "2"]
    proc = subprocess.run([*command, *small, "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["batch"] == 2 * 13 and result["weights_per_problem"] == 17 * 5 and result["device"] == "cpu"
    assert result["compact_s_per_step"] > 0 and result["two_loop_s_per_step"] > 0
    ratio = result["two_loop_s_per_step"] / result["compact_s_per_step"]
    assert 0.3 < result["two_loop_over_compact"] / ratio < 3  # a median of per-round ratios, near the medians' ratio
    proc = subprocess.run([*command, *small], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "two-loop / compact" in proc.stdout and proc.stdout.count("\n") == 1
    proc = subprocess.run([*command, "--steps", "0"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "must be positive" in proc.stderr
