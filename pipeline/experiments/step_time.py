"""Milliseconds per Trainer.step of one model under params overrides, on fixed tensors.

python pipeline/experiments/step_time.py gan '{"train": {"gan": {"channels_last": true}}}' 10
(the README's channels-last / compile comparison; alternate configs, this machine drifts).
"""

import json
import sys
import time

import torch

from deblur import config
from deblur.train.distributed import World
from deblur.train.loop import Trainer

kind = sys.argv[1]
over = json.loads(sys.argv[2])
n = int(sys.argv[3]) if len(sys.argv) > 3 else 10
params = config.parse(config.merge(config.load_raw("params.yaml"), over))
t = Trainer(kind, getattr(params.train, kind), params.seed, World(0, 1, torch.device("cpu")))
cfg = t.cfg
x = torch.rand(cfg.batch_size, 3, cfg.crop, cfg.crop)
y = torch.rand_like(x)
for _ in range(3):
    t.step(x, y)
s = time.perf_counter()
for _ in range(n):
    t.step(x, y)
dt = (time.perf_counter() - s) / n
print(
    f"{kind} {sys.argv[2]} {dt * 1000:.0f} ms/step {cfg.batch_size / dt:.1f} samples/s", flush=True
)
