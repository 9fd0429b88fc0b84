"""The training engine on a tiny learnable problem: it learns, stops early, keeps the best checkpoint."""

import dataclasses

import numpy as np
import pytest
import torch
from conftest import tiny_params

from cifarbench import params
from cifarbench.errors import BenchError
from cifarbench.models import checkpoint, inference, timm_models
from cifarbench.runtime import device as runtimelib
from cifarbench.train import engine


def quadrant_images(n, seed):
    """Class = which quadrant holds a bright blob (4 classes): learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    images = rng.integers(0, 60, (n, 32, 32, 3), dtype=np.uint8)
    for i, c in enumerate(labels):
        y, x = divmod(int(c), 2)
        images[i, y * 16 + 4 : y * 16 + 12, x * 16 + 4 : x * 16 + 12] = 230
    return images, labels


def _setup(key="dinov2_vitb14", **overrides):
    p = params.parse(tiny_params(**overrides))
    rt = runtimelib.resolve(p.compute)
    spec = p.model(key)
    torch.manual_seed(0)
    model = inference.prepare_model(timm_models.create(spec, num_classes=4), rt)
    prep = inference.preprocess_for(model, rt, spec.img_size)
    train_x, train_y = quadrant_images(256, 0)
    val_x, val_y = quadrant_images(64, 1)
    from cifarbench.data.transforms import to_tensor

    tensors = (to_tensor(train_x, "cpu"), torch.from_numpy(train_y), to_tensor(val_x, "cpu"), torch.from_numpy(val_y))
    return p, rt, spec, model, prep, tensors


def test_trainer_learns_and_reports_each_epoch():
    # lr 0.05: at the demo recipe's 0.01 four epochs of 8 steps leave the blobs half learned
    p, rt, spec, model, prep, tensors = _setup("resnet18", train__resnet18__epochs=4, train__resnet18__lr=0.05)
    trainer = engine.Trainer(
        model, p.recipe("train", "resnet18"), rt, prep, seed=0, eval_batch_size=64, n_train=len(tensors[1])
    )
    results = list(trainer.epochs(*tensors))
    assert [r.epoch for r in results] == [1, 2, 3, 4]
    assert results[-1].val_acc > 0.6  # chance is 0.25
    assert results[-1].train_loss < results[0].train_loss
    assert trainer.best_acc == max(r.val_acc for r in results)


def test_early_stopping_stops_after_patience():
    # lr so small nothing improves after the first epoch's result
    p, rt, spec, model, prep, tensors = _setup(
        train__dinov2_vitb14__epochs=20,
        train__dinov2_vitb14__lr=1e-12,
        train__dinov2_vitb14__early_stopping=2,
        train__dinov2_vitb14__warmup_epochs=0,
    )
    trainer = engine.Trainer(
        model, p.recipe("train", "dinov2_vitb14"), rt, prep, seed=0, eval_batch_size=64, n_train=len(tensors[1])
    )
    results = list(trainer.epochs(*tensors))
    assert trainer.stopped_early and len(results) < 20
    assert sum(r.improved for r in results) == len(results) - 2


def test_same_seed_same_result():
    def run():
        p, rt, spec, model, prep, tensors = _setup(
            train__dinov2_vitb14__epochs=1, train__dinov2_vitb14__warmup_epochs=0
        )
        trainer = engine.Trainer(
            model, p.recipe("train", "dinov2_vitb14"), rt, prep, seed=0, eval_batch_size=64, n_train=len(tensors[1])
        )
        return [r.train_loss for r in trainer.epochs(*tensors)]

    assert run() == run()


def test_nan_loss_stops_with_epoch_and_step():
    p, rt, spec, model, prep, tensors = _setup(train__dinov2_vitb14__epochs=2)
    trainer = engine.Trainer(
        model, p.recipe("train", "dinov2_vitb14"), rt, prep, seed=0, eval_batch_size=64, n_train=len(tensors[1])
    )
    with torch.no_grad():
        model.head.weight.fill_(float("nan"))
    with pytest.raises(BenchError, match=r"loss is NaN or infinite at epoch 1, step 1:"):
        list(trainer.epochs(*tensors))


@pytest.mark.parametrize("key", ["resnet18", "dinov2_vitb14"])
def test_checkpoint_rebuilds_the_same_model(tmp_path, key):
    p, rt, spec, model, prep, tensors = _setup(key)
    path = tmp_path / "m.pt"
    checkpoint.save(
        path,
        model,
        key=key,
        spec=spec,
        dataset="cifar10",
        classes=list("abcd"),
        coarse_classes=None,
        image_size=(32, 32),
        epoch=1,
        val_acc=0.5,
    )
    loaded, preprocess, info = inference.load(path, rt)
    assert info["classes"] == list("abcd") and info["spec"] == spec
    x = tensors[2][:8]
    torch.testing.assert_close(inference.infer(loaded, x, preprocess, rt, 4), inference.infer(model, x, prep, rt, 4))


def test_missing_checkpoint_says_which_stage_to_run(tmp_path):
    with pytest.raises(BenchError, match=r"run `dvc repro train-cifar10@resnet18-0`"):
        checkpoint.read(tmp_path / "cifar10" / "resnet18-0.pt")


def test_bf16_autocast_and_channels_last_run_on_cpu():
    """The CUDA path's precision and memory format also work on CPU (bf16 autocast)."""
    p, rt, spec, model, prep, tensors = _setup(
        "resnet18", compute__precision="bf16", train__resnet18__epochs=1, train__resnet18__warmup_epochs=0
    )
    assert rt.amp_dtype is torch.bfloat16 and prep.channels_last
    trainer = engine.Trainer(
        model, p.recipe("train", "resnet18"), rt, prep, seed=0, eval_batch_size=64, n_train=len(tensors[1])
    )
    [result] = list(trainer.epochs(*tensors))
    assert np.isfinite(result.train_loss) and 0 <= result.val_acc <= 1


@pytest.mark.slow
def test_torch_compile_runs_on_cpu():
    p, rt, spec, model, prep, tensors = _setup(
        compute__compile=True, train__dinov2_vitb14__epochs=1, train__dinov2_vitb14__warmup_epochs=0
    )
    trainer = engine.Trainer(
        model, p.recipe("train", "dinov2_vitb14"), rt, prep, seed=0, eval_batch_size=64, n_train=len(tensors[1])
    )
    [result] = list(trainer.epochs(*tensors))
    assert np.isfinite(result.train_loss)


def test_fp16_on_cpu_is_refused_in_one_line():
    with pytest.raises(BenchError, match="compute.precision: fp16 needs a CUDA device"):
        runtimelib.resolve(params.parse(tiny_params(compute__precision="fp16")).compute)


def test_infer_gives_the_same_rows_whatever_the_chunking(monkeypatch):
    # a GPU preprocesses many batches per chunk (transforms.batches_per_chunk); the rows must not change
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    prep = inference.transforms.Preprocess(40, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    images = torch.from_numpy(quadrant_images(23, 0)[0]).permute(0, 3, 1, 2).contiguous()
    rt = runtimelib.Runtime(device=torch.device("cpu"), amp_dtype=None, compile=False)
    plain = inference.infer(model, images, prep, rt, batch_size=4)
    monkeypatch.setattr(inference.transforms, "batches_per_chunk", lambda device, batch_size: 3)
    chunked = inference.infer(model, images, prep, rt, batch_size=4)
    assert plain.shape == (23, 4) and torch.equal(plain, chunked)


def test_a_compile_that_fails_falls_back_to_eager_under_auto_and_stops_when_asked_for(monkeypatch, capsys):
    """compute.compile: auto on a machine where torch.compile cannot work (no C compiler, an inductor bug):
    one line, then the same training without it; compute.compile: true keeps the error."""

    def broken_compile(fn, **kwargs):
        def compiled(*args, **kw):
            raise RuntimeError("InductorError: no working C++ compiler found\nmore lines")

        return compiled

    monkeypatch.setattr(engine.torch, "compile", broken_compile)
    for fallback in (True, False):
        p, rt, spec, model, prep, tensors = _setup(
            train__dinov2_vitb14__epochs=1, train__dinov2_vitb14__warmup_epochs=0
        )
        rt = dataclasses.replace(rt, compile=True, compile_fallback=fallback)
        trainer = engine.Trainer(
            model, p.recipe("train", "dinov2_vitb14"), rt, prep, seed=0, eval_batch_size=64, n_train=256
        )
        assert trainer.compiled
        if not fallback:
            with pytest.raises(RuntimeError, match="C\\+\\+ compiler"):
                list(trainer.epochs(*tensors))
            continue
        [result] = list(trainer.epochs(*tensors))
        assert np.isfinite(result.train_loss) and not trainer.compiled
        assert capsys.readouterr().out.splitlines()[0] == (
            "torch.compile failed on the first step (RuntimeError: InductorError: no working C++ compiler found); "
            "compute.compile: auto goes on without it (set it to false to skip the attempt)"
        )


def test_a_recipe_can_keep_its_model_eager_where_compute_compile_compiles(monkeypatch):
    """train.<model>.compile: false (EfficientNet-B0's, where compiling costs more than it saves) wins over
    compute.compile; the default recipe compiles."""

    calls = []
    monkeypatch.setattr(engine.torch, "compile", lambda fn, **kwargs: calls.append(fn) or fn)
    p, rt, spec, model, prep, tensors = _setup(train__dinov2_vitb14__epochs=1, train__dinov2_vitb14__warmup_epochs=0)
    rt = dataclasses.replace(rt, compile=True)
    recipe = p.recipe("train", "dinov2_vitb14")
    assert recipe.compile and not p.recipe("train", "efficientnet_b0").compile
    assert not p.recipe("transfer", "efficientnet_b0").compile
    eager = engine.Trainer(model, recipe.model_copy(update={"compile": False}), rt, prep, 0, 64, n_train=256)
    assert not eager.compiled and calls == []
    [result] = list(eager.epochs(*tensors))
    assert np.isfinite(result.train_loss) and calls == []
    compiled = engine.Trainer(model, recipe, rt, prep, 0, 64, n_train=256)
    assert compiled.compiled and len(calls) == 1


def test_a_finished_trainer_frees_its_state_without_waiting_for_the_garbage_collector():
    """No reference cycle through the trainer: its model, gradients and optimizer state (GPU memory on a card)
    go when the last reference does, as they would at the end of a stage's process."""
    import gc
    import weakref

    p, rt, spec, model, prep, tensors = _setup(train__dinov2_vitb14__epochs=1, train__dinov2_vitb14__warmup_epochs=0)
    recipe = p.recipe("train", "dinov2_vitb14")
    for compiles in (False, True):  # compiled: torch.compile wraps the step but compiles only on the first call
        trainer = engine.Trainer(model, recipe, dataclasses.replace(rt, compile=compiles), prep, 0, 64, n_train=256)
        assert trainer.compiled == compiles
        if not compiles:
            list(trainer.epochs(*tensors))
        refs = [weakref.ref(trainer), weakref.ref(trainer.optimizer), weakref.ref(trainer.schedule)]
        gc.disable()
        try:
            del trainer
            assert [ref() for ref in refs] == [None, None, None]
        finally:
            gc.enable()
