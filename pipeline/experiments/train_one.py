"""The README's "Quality" sweep: train one model with params overrides, score it on test.

No DVC, MLflow or files: one Trainer on data/processed (run `dvc repro preprocess` first),
then the test split scored as `deblur evaluate` scores it. One line of quality_sweep.tsv is

    python pipeline/experiments/train_one.py NAME KIND 'JSON overrides' --device cuda --strict

(--strict: TF32 off, float32 arithmetic as on a CPU; --curve: score after every epoch;
--budget S: stop after the epoch that passes S training seconds). Prints "RESULT {json}":
test PSNR/SSIM gain over the blurry input, training seconds, samples/s.
"""

import json
import sys
import time

import torch

from deblur import config
from deblur.data.dataset import PairStore
from deblur.evaluate.protocol import model_method, score_method
from deblur.metrics import mean_scores
from deblur.train import data as train_data
from deblur.train import distributed
from deblur.train.loop import Trainer


def main():
    name, kind, over = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    device = "cpu"
    if "--device" in sys.argv:
        device = sys.argv[sys.argv.index("--device") + 1]
    if "--threads" in sys.argv:
        torch.set_num_threads(int(sys.argv[sys.argv.index("--threads") + 1]))
    budget = float(sys.argv[sys.argv.index("--budget") + 1]) if "--budget" in sys.argv else 1e9
    if device == "cuda" and "--strict" in sys.argv:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    params = config.parse(config.merge(config.load_raw("params.yaml"), over))
    world = distributed.init(device)
    data = train_data.build(kind, params.train, params.preprocess.protocol, params.seed, world)
    trainer = Trainer(kind, getattr(params.train, kind), params.seed, world, data)
    cfg = trainer.cfg
    start = time.perf_counter()
    curve = []
    for epoch in range(cfg.epochs):
        row = trainer.train_epoch()
        trainer.state.epoch += 1
        trainer.state.seconds += row["seconds"]
        last = epoch == cfg.epochs - 1 or trainer.state.seconds > budget
        if "--curve" in sys.argv or last:
            test = PairStore(split="test")
            model = trainer.shipped().eval()
            ev = params.evaluate
            method = model_method(model, ev.tile, ev.overlap, world.device)
            scores = mean_scores(score_method(name, method, test, "full", timed=False))
            blurry = mean_scores(score_method("b", lambda x: x, test, "full", timed=False))
            curve.append(
                (
                    trainer.state.step,
                    round(scores["psnr"] - blurry["psnr"], 4),
                    round(scores["ssim"] - blurry["ssim"], 4),
                    round(trainer.state.seconds, 1),
                )
            )
            trainer.model.train()
            if world.main:
                print("CURVE", name, curve[-1], round(row["samples_per_s"], 2), flush=True)
        if last:
            break
    total = time.perf_counter() - start
    out = {
        "name": name,
        "kind": kind,
        "psnr_gain": curve[-1][1],
        "ssim_gain": curve[-1][2],
        "train_s": round(trainer.state.seconds, 1),
        "wall_s": round(total, 1),
        "samples_per_s": round(trainer.state.step * cfg.batch_size / trainer.state.seconds, 2),
        "steps": trainer.state.step,
        "params": sum(p.numel() for p in trainer.shipped().parameters()),
        "device": str(world.device),
        "curve": curve,
        "over": over,
    }
    if world.main:
        print("RESULT " + json.dumps(out), flush=True)
    distributed.shutdown(world)


if __name__ == "__main__":
    main()
