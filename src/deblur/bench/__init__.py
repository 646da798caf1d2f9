"""`deblur bench`: how fast this machine deblurs, trains and loads data.

Every number is the median of ``repeats`` timed runs after one warm-up run; the warm-up
pays for first-call allocations, kernel selection and torch.compile's compilation.

- inference: milliseconds per megapixel on a 1280x720 image, for each model, through the
  default path (deblur.infer.deblur_image, what predict and evaluate run) and each
  alternative (eager NCHW forward, channels-last, torch.compile, bfloat16 autocast, ONNX
  Runtime), with the largest difference of its output from eager's, and the GFLOP/s that
  makes as a share of this machine's float32 peak (see peak.py: the higher of the fastest
  product measured and the cores' FMA limit, raised to any path that beats both);
- train: samples per second through the real Trainer.step at the profile's crop and batch,
  and the GFLOP/s and share of the peak that makes;
- data: samples per second of random crops from data/processed against decoding the same
  crops' PNGs from data/raw;
- dvc: seconds of a `dvc repro` with nothing to do (never a real run).

Measured on the CPU, where the pipeline runs by default. Results go to reports/bench.csv.
One module per thing measured; this one runs them in order. No stage imports bench.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch

from deblur import allocator
from deblur.bench import peak as peaks
from deblur.bench.data import bench_data
from deblur.bench.dvc import bench_dvc
from deblur.bench.inference import bench_inference
from deblur.bench.output import table, write_csv
from deblur.bench.timing import Sizes, say
from deblur.bench.training import bench_train
from deblur.config import Params
from deblur.kinds import KINDS


def measure(params: Params, repeats: int = 5, quick: bool = False) -> dict[str, Any]:
    """Every section; the JSON of `deblur bench --json`."""
    sizes = Sizes(quick)
    # Other processes skew every number here: record how busy the machine was.
    load = round(os.getloadavg()[0], 2)
    say("fp32 peak: matrix products, a convolution, the FMA limit")
    peak = peaks.combine(*peaks.best_product(sizes.matmul, sizes.conv, repeats), peaks.fma_limit())
    inference = {kind: bench_inference(kind, params, sizes, repeats) for kind in KINDS}
    train = {}
    for kind in KINDS:
        say(f"train {kind}")
        train[kind] = bench_train(kind, params, sizes, repeats)
    # Every GFLOP/s reported, by name: no share of the peak may exceed 100%.
    rated = {f"train {kind}": r for kind, r in train.items()}
    for kind, inf in inference.items():
        for name, r in inf["paths"].items():
            if r["status"] == "ok":
                rated[f"inference {kind} {name}"] = r
    peak = peaks.raise_to_measured(peak, {name: r["gflops"] for name, r in rated.items()})
    for r in [*rated.values(), *inference.values()]:  # each model's: its default path's
        r["peak_fraction"] = peaks.share(r["gflops"], peak)
    dvc_s, dvc_note = bench_dvc(repeats)
    return {
        "machine": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cores": os.cpu_count(),
            "load_1min_before": load,
            "cpu": torch.backends.cpu.get_cpu_capability(),
            "allocator": allocator.tune(),
        },
        "repeats": repeats,
        "quick": quick,
        "inference": inference,
        "train": train,
        "data": bench_data(params, sizes, repeats),
        "dvc_noop_s": dvc_s,
        "dvc_note": dvc_note,
        **peak.fields(),
    }


def run(params: Params, repeats: int = 5, quick: bool = False, as_json: bool = False) -> dict:
    """`deblur bench`: measure, write reports/bench.csv, print JSON or tables."""
    report = measure(params, repeats=repeats, quick=quick)
    write_csv(report)
    print(json.dumps(report, indent=2) if as_json else table(report))
    return report
