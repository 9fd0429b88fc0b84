"""Run by test_distributed.py, under torchrun with 2 processes and in the test's own process as one: one epoch of
two steps of engine.Trainer on fixed images.

    distributed_step.py OUT_DIR SCENARIO...   (in a project folder: params.yaml gives models and recipes)

Every scenario builds its model afresh from the same seed and trains it with
Trainer.train_epoch, the path training runs take: 16 fixed images, the
recipe's global batch of 8 split across the ranks as training splits it (the
test's params turn augmentation off). Each rank saves its weights before and
after as OUT_DIR/<scenario>-world<W>-rank<R>.pt. Scenarios:

  vit, cnn         the tiny ViT (LayerNorm) or ResNet-18 (BatchNorm), as training runs them
  vit-without-ddp  the Trainer's DDP wrapper removed: what the test must tell apart
  cnn-per-rank-bn  one process whose BatchNorm layers normalise each rank's share of the batch
                   apart (rows r, r + 2, ... of a step's batch are rank r's share of 2):
                   what 2 ranks compute without SyncBatchNorm
"""

import contextlib
import sys
from pathlib import Path
from unittest import mock

import torch

from cifarbench import params
from cifarbench.models import inference, timm_models
from cifarbench.runtime import device as runtimelib
from cifarbench.runtime import distributed
from cifarbench.train import engine

SHARES = 2  # the ranks cnn-per-rank-bn stands in for
MODELS = {"vit": "dinov2_vitb14", "cnn": "resnet18"}


def per_rank_batchnorm(model, shares):
    """Make every BatchNorm layer normalise rows r, r + shares, ... of its input apart, as `shares` ranks do.

    The running statistics end as the first share's (rank 0's, the rank that saves).
    """
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.forward = lambda x, m=module, forward=module.forward: _split(m, forward, x, shares)


def _split(module, forward, x, shares):
    if not module.training:
        return forward(x)
    rank0_buffers = dict(module.named_buffers(recurse=False))
    outputs = []
    for r in range(shares):
        if r == 1:  # the other shares update copies (autograd keeps the originals, so no in-place restore)
            for name, buffer in rank0_buffers.items():
                setattr(module, name, buffer.clone())
        outputs.append(forward(x[r::shares]))
    for name, buffer in rank0_buffers.items():
        setattr(module, name, buffer)
    return torch.stack(outputs, dim=1).flatten(0, 1)  # back in batch order: row i from share i % shares


def fixed_data(n=16):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(n) % 10


def train_one_epoch(scenario, p, rt):
    family = scenario.split("-")[0]
    key = MODELS[family]
    spec, recipe = p.model(key), p.recipe("train", key)
    torch.manual_seed(0)
    model = inference.prepare_model(timm_models.create(spec, num_classes=10, key=key), rt)
    if scenario == "cnn-per-rank-bn":
        per_rank_batchnorm(model, SHARES)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    images, labels = fixed_data()
    bare = mock.patch.object(engine.Trainer, "_parallel", lambda self, m: m)
    with bare if scenario == "vit-without-ddp" else contextlib.nullcontext():
        trainer = engine.Trainer(
            model,
            recipe,
            rt,
            inference.preprocess_for(model, rt, spec.img_size),
            seed=0,
            eval_batch_size=8,
            n_train=len(labels),
            sync_bn=p.compute.sync_bn,
        )
        assert trainer.plan(len(labels))[2] == 2, "the test's params must make an epoch two steps"
        trainer.train_epoch(images, labels)
    after = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    return {"before": before, "after": after, "batchnorm": trainer.batchnorm}


def main(out_dir, scenarios):
    p = params.load()
    rt = runtimelib.resolve(p.compute)
    distributed.init(rt.device)
    world, rank = distributed.world_size(), distributed.rank()
    for scenario in scenarios:
        torch.save(train_one_epoch(scenario, p, rt), Path(out_dir) / f"{scenario}-world{world}-rank{rank}.pt")
    distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
