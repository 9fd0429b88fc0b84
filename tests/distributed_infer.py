"""Run by test_distributed.py, under torchrun with 2 processes and in the test's own process as one: evaluate one
checkpoint with every rank taking a share."""

import json
import sys

import torch

from cifarbench.data import dataset, transforms
from cifarbench.models import inference
from cifarbench.params import Compute
from cifarbench.runtime import distributed
from cifarbench.runtime.device import resolve

checkpoint_path, data_dir, out_path = sys.argv[1:4]
rt = resolve(Compute(device="cpu", devices=1, precision="fp32", compile=False, eval_batch_size=7, sync_bn=False))
distributed.init(rt.device)
model, preprocess, _ = inference.load(checkpoint_path, rt)
test = dataset.load_split(data_dir, "test")
logits = inference.infer(model, transforms.to_tensor(test.images, rt.device), preprocess, rt, batch_size=7)
if distributed.is_main():
    predicted = logits.argmax(1)
    json.dump(
        {
            "rows": len(logits),
            "world": distributed.world_size(),
            "correct": int((predicted == torch.from_numpy(test.labels)).sum()),
            "predicted": predicted.tolist(),
        },
        open(out_path, "w"),
    )
distributed.shutdown()
