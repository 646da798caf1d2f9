"""`deblur bench`: how fast this machine deblurs, trains and loads data.

Every number is the median of ``repeats`` timed runs after one warm-up run; the warm-up
pays for first-call allocations, kernel selection and torch.compile's compilation.

- inference: milliseconds per megapixel on a 1280x720 image, for each model, through the
  default path (deblur.infer.deblur_image, what predict and evaluate run) and each
  alternative (eager NCHW forward, channels-last, torch.compile, bfloat16 autocast, ONNX
  Runtime), with the largest difference of its output from eager's, and the GFLOP/s that
  makes against this machine's measured float32 matrix-multiply peak;
- train: samples per second through the real Trainer.step at the profile's crop and batch;
- data: samples per second of random crops from data/processed against decoding the same
  crops' PNGs from data/raw;
- dvc: seconds of a `dvc repro` with nothing to do (never a real run).

Measured on the CPU, where the pipeline runs by default. Results go to reports/bench.csv.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deblur import allocator, fsutil, infer, models, paths
from deblur.config import Params

KINDS = ("gan", "ae")
CSV = paths.REPORTS / "bench.csv"
# "Same result" as eager: float32 paths only reorder sums, bfloat16 keeps 8 bits of mantissa.
FP32_TOL, BF16_TOL = 1e-4, 2e-2
TILED = 512  # the old default tile side, measured to show what tiling costs
# Paths with no one-off cost: candidates for deblur_image's default, since predicting a
# single image must not pay for an export or a compilation (see infer._forward).
NO_SETUP = ("default", "eager", "channels_last", "bf16")
# Seconds of rest before each timed run: ONNX Runtime's threads spin-wait after a run and
# slowed the PyTorch path timed right after it by ~15%; this lets them go back to sleep.
SETTLE = 0.2


class Sizes:
    """What gets measured: full sizes, or tiny ones for a smoke test (--quick)."""

    def __init__(self, quick: bool):
        self.quick = quick
        self.image = (72, 128) if quick else (720, 1280)  # (height, width)
        self.matmul = (256,) if quick else (1024, 2048, 4096)
        self.crops = 8 if quick else 64  # data samples per timed run
        self.folder = 2 if quick else 4  # images in the timed `predict` of a folder


def timed(fn: Callable[[], Any], repeats: int, warmup: bool = True) -> float:
    """Median seconds of ``repeats`` calls of ``fn``, after one untimed call."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def say(message: str) -> None:
    # Progress goes to stderr, so that `--json` prints nothing but JSON on stdout.
    print(f"bench: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- peak


def peak_gflops(sizes: tuple[int, ...], repeats: int) -> tuple[float, str]:
    """(GFLOP/s, how) of the fastest float32 matrix product this machine runs: the limit.

    Both of the BLAS libraries at hand, at several sizes: on an AMD CPU torch's MKL got
    ~110 GFLOP/s where numpy's OpenBLAS got ~134, and oneDNN's convolutions outran MKL's
    matmul, so one library's figure is not the machine's peak.
    """
    gen = np.random.default_rng(0)
    best, how = 0.0, ""
    for n in sizes:
        a, b = (gen.random((n, n), dtype=np.float32) for _ in range(2))
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        products = {"torch.mm": partial(torch.mm, ta, tb), "numpy": partial(np.matmul, a, b)}
        for name, product in products.items():
            gflops = 2 * n**3 / timed(product, repeats) / 1e9
            if gflops > best:
                best, how = gflops, f"{name} {n}x{n}"
    return best, how


# --------------------------------------------------------------------------- inference


def sample_image(h: int, w: int) -> np.ndarray:
    """A smooth uint8 RGB image with some noise: edges for the model to work on."""
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(17 * x + 5 * y), np.cos(11 * y - 7 * x), np.sin(13 * (x + y))], -1)
    noise = np.random.default_rng(0).standard_normal((h, w, 3))
    return infer.to_uint8(0.5 + 0.4 * base + 0.03 * noise)


def bench_model(kind: str, params: Params) -> tuple[nn.Module, Path | None, str]:
    """models/<kind>.pt if trained, else the params' architecture with random weights."""
    path = paths.checkpoint(kind)
    if path.is_file():
        return models.load(path), path, str(path)
    model = models.build(kind, models.arch_config(kind, params)).eval()
    # A fresh model is the identity (the last conv of each residual branch starts at zero),
    # which every path reproduces exactly: real weights make the comparison mean something.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for layer in model.modules():
            if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
                layer.reset_parameters()
    return model, None, f"untrained ({path} not found): params architecture, random weights"


def bf16_unsupported() -> str | None:
    """Why bfloat16 autocast is not worth measuring here, or None if it is.

    Without native bfloat16 (AVX512-BF16, AMX) oneDNN emulates it, slower than float32.
    """
    try:
        native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):
        native = False
    return None if native else "unsupported: this CPU has no native bfloat16 (AVX512-BF16/AMX)"


def _checkpoint_file(kind: str, model: nn.Module, params: Params, tmp: Path) -> Path:
    """The bench model as a checkpoint file, for the paths that read one (export, predict)."""
    path = tmp / f"{kind}.pt"
    torch.save(models.checkpoint_dict(kind, model, models.arch_config(kind, params)), path)
    return path


def _onnx(kind: str, checkpoint: Path, tmp: Path):
    """(an ONNX Runtime model, None) through deblur.export, or (None, why not)."""
    try:
        import onnxruntime  # noqa: F401

        from deblur.export import OnnxModel, export_onnx
    except ImportError:
        return None, "onnx export not available"
    try:
        path, _ = export_onnx(str(checkpoint), tmp / f"{kind}.onnx")
    except Exception as exc:  # the exporter fails in many ways; say which, go on
        return None, f"skipped: export failed ({str(exc).splitlines()[0][:120]})"
    return OnnxModel(path), None


def _compiled(model: nn.Module, x: torch.Tensor):
    """(torch.compile'd model, seconds to compile, None) or (None, None, why it failed)."""
    try:
        compiled = torch.compile(model)
        start = time.perf_counter()
        with torch.inference_mode():
            compiled(x)
        return compiled, time.perf_counter() - start, None
    except Exception as exc:  # no C compiler, unsupported op, ...: a note, not a crash
        torch._dynamo.reset()
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        return None, None, f"skipped: torch.compile failed here ({reason})"


def bench_inference(kind: str, params: Params, sizes: Sizes, repeats: int) -> dict[str, Any]:
    model, checkpoint, source = bench_model(kind, params)
    macs = models.macs_per_megapixel(model)
    h, w = sizes.image
    image = sample_image(h, w)
    x = torch.from_numpy(infer.to_float(image).transpose(2, 0, 1).copy())[None]
    x_cl = x.contiguous(memory_format=torch.channels_last)
    tile, overlap = params.evaluate.tile, params.evaluate.overlap
    small_tile = min(TILED, max(h, w) // 2)

    def bf16_forward() -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model(x).float()

    # name -> (forward, tolerance, note); a string instead: why it is skipped. A forward
    # returns NCHW, or HxWx3 as deblur_image does: compared as NCHW, timed as it is.
    candidates: dict[str, Any] = {
        "default": (
            lambda: infer.deblur_image(model, image, tile, overlap),
            FP32_TOL,
            f"deblur_image, tile {tile}: {_count_tiles(h, w, tile, overlap)} tile(s)",
        ),
        "eager": (lambda: model(x), FP32_TOL, "model(x), NCHW float32"),
        "channels_last": (lambda: model(x_cl), FP32_TOL, "channels-last input"),
    }
    candidates["tiled"] = (
        (
            lambda: infer.deblur_image(model, image, small_tile, overlap),
            FP32_TOL,
            f"deblur_image, tile {small_tile}: {_count_tiles(h, w, small_tile, overlap)} "
            "tiles (blended tiles differ from one whole pass: not expected to be the same)",
        )
        if small_tile > overlap
        else f"skipped: tile {small_tile} is not larger than evaluate.overlap {overlap}"
    )
    if sizes.quick:
        candidates["compile"] = "skipped: --quick (compiling takes half a minute)"
    else:
        say(f"{kind}: torch.compile")
        compiled, compile_s, why = _compiled(model, x_cl)
        candidates["compile"] = why or (
            lambda: compiled(x_cl),
            FP32_TOL,
            f"torch.compile, channels-last input; compiling took {compile_s:.0f} s",
        )
    why = bf16_unsupported()
    candidates["bf16"] = why or (bf16_forward, BF16_TOL, "torch.autocast bfloat16")
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = checkpoint or _checkpoint_file(kind, model, params, Path(tmp))
        say(f"{kind}: onnx export")
        onnx_model, why = _onnx(kind, checkpoint, Path(tmp))
        candidates["onnx"] = why or (lambda: onnx_model(x), FP32_TOL, "ONNX Runtime, CPU")
        results = _measure(kind, candidates, h * w / 1e6, macs, repeats)
        say(f"{kind}: predict")
        # predict's own forward is the default path's: channels-last input, one tile at 720p.
        predict = bench_predict(
            image, checkpoint, params, Path(tmp), repeats, sizes.folder, lambda: model(x_cl)
        )
    torch._dynamo.reset()  # drop compiled graphs and their memory
    # Against eager too: eager's time relative to channels-last's, from the rounds above.
    eager_vs_cl = results["eager"]["ms_per_mp"] / results["channels_last"]["ms_per_mp"]
    predict["vs_eager"] = round(predict["vs_forward"] / eager_vs_cl, 3)
    predict["folder_vs_eager"] = round(predict["folder_vs_forward"] / eager_vs_cl, 3)

    default, eager = results["default"], results["eager"]
    same = [n for n, r in results.items() if r.get("same_result") and n != "tiled"]

    def fastest(names: list[str]) -> str:
        return min(names, key=lambda n: results[n]["ms_per_mp"])

    return {
        "source": source,
        "image": f"{w}x{h}",
        "params": models.count_params(model),
        "macs_per_mp": macs,
        "ms_per_mp": default["ms_per_mp"],
        "gflops": default["gflops"],
        "default_vs_eager": round(default["ms_per_mp"] / eager["ms_per_mp"], 3),
        "fastest_same_result": fastest(same),
        "fastest_same_result_without_setup": fastest([n for n in same if n in NO_SETUP]),
        "paths": results,
        "predict": predict,
    }


def bench_predict(
    image: np.ndarray,
    checkpoint: Path,
    params: Params,
    tmp: Path,
    repeats: int,
    folder: int,
    forward: Callable[[], torch.Tensor],
) -> dict[str, Any]:
    """`deblur predict` against the model's own ``forward``, timed in turns like the paths:
    one PNG, the whole call (load the checkpoint, decode, deblur, encode, write), and per
    image on a folder of ``folder`` PNGs, where the model loads once and file I/O overlaps
    the model."""
    from deblur.data.images import write_png

    sources = [tmp / "frames" / f"{i}.png" for i in range(folder)]
    for source in sources:
        write_png(source, image)

    def predict(files: list[Path]) -> None:
        infer.predict(
            files,
            tmp / "out",
            spec=str(checkpoint),
            tile=params.evaluate.tile,
            overlap=params.evaluate.overlap,
            device="cpu",
            progress=False,
        )

    def bare() -> None:
        with torch.inference_mode():
            forward()

    runs: dict[str, list[float]] = {"forward": [], "one": [], "folder": []}
    predict(sources)  # warm-up
    for _ in range(repeats):
        time.sleep(SETTLE)
        runs["forward"].append(timed(bare, 1, warmup=False))
        time.sleep(SETTLE)
        runs["one"].append(timed(lambda: predict(sources[:1]), 1, warmup=False))
        time.sleep(SETTLE)
        runs["folder"].append(timed(lambda: predict(sources), 1, warmup=False) / folder)
    fwd, one, each = (statistics.median(runs[k]) for k in ("forward", "one", "folder"))
    return {
        "ms": round(one * 1e3, 1),
        "ms_per_mp": round(one * 1e3 / (image.shape[0] * image.shape[1] / 1e6), 2),
        "folder_ms_per_image": round(each * 1e3, 1),
        "folder_images": folder,
        "forward_ms": round(fwd * 1e3, 1),
        "vs_forward": round(one / fwd, 3),
        "folder_vs_forward": round(each / fwd, 3),
        "note": "infer.predict on PNGs against a channels-last forward, timed in turns",
    }


def _count_tiles(h: int, w: int, tile: int, overlap: int) -> int:
    if h <= tile and w <= tile:
        return 1
    return len(infer._spans(h, tile, overlap)) * len(infer._spans(w, tile, overlap))


def _nchw(out: torch.Tensor | np.ndarray) -> torch.Tensor:
    if isinstance(out, np.ndarray):  # deblur_image's HxWx3
        return torch.from_numpy(out.transpose(2, 0, 1).copy())[None]
    return out.float()


def _measure(kind, candidates, megapixels, macs, repeats) -> dict[str, dict[str, Any]]:
    """Check each path against eager, then time them in turns: round k times every path
    once. On a shared machine a slow spell lasts seconds; timed one path after the other,
    it fell on whichever path ran then (torch.compile looked 1.4x faster that way, 1.05x
    when interleaved)."""
    results: dict[str, dict[str, Any]] = {}
    runnable: dict[str, Callable[[], torch.Tensor]] = {}
    with torch.inference_mode():
        reference = candidates["eager"][0]()
        for name, entry in candidates.items():
            if isinstance(entry, str):
                status = "unsupported" if entry.startswith("unsupported") else "skipped"
                results[name] = {"status": status, "note": entry}
                continue
            forward, tol, note = entry
            say(f"{kind}: {name}")
            diff = float((_nchw(forward()) - reference).abs().max())  # doubles as warm-up
            runnable[name] = forward
            results[name] = {
                "status": "ok",
                "max_abs_diff": diff,
                "tolerance": tol,
                "same_result": diff <= tol,
                "note": note,
            }
        say(f"{kind}: timing {len(runnable)} paths in {repeats} rounds")
        times: dict[str, list[float]] = {name: [] for name in runnable}
        for _ in range(repeats):
            for name, forward in runnable.items():
                time.sleep(SETTLE)
                times[name].append(timed(forward, 1, warmup=False))
    for name, runs in times.items():
        seconds = statistics.median(runs)
        results[name]["ms_per_mp"] = round(seconds * 1e3 / megapixels, 2)
        results[name]["gflops"] = round(2 * macs * megapixels / seconds / 1e9, 2)
    eager = results["eager"]["ms_per_mp"]
    for r in results.values():
        if r["status"] == "ok":
            r["speedup_vs_eager"] = round(eager / r["ms_per_mp"], 3)
    return results


# --------------------------------------------------------------------------- training


def bench_train(kind: str, params: Params, sizes: Sizes, repeats: int) -> dict[str, Any]:
    """Samples per second of Trainer.step: forward, losses, backward, AdamW (and, for the
    GAN, the discriminator's step), on random tensors of the profile's crop and batch."""
    from deblur.train.distributed import World
    from deblur.train.loop import Trainer

    class StepOnly(Trainer):
        def _data(self) -> None:  # no data/processed, no DataLoader: the step alone
            pass

    cfg = getattr(params.train, kind)
    crop, batch = (
        (min(cfg.crop, 64), min(cfg.batch_size, 2)) if sizes.quick else (cfg.crop, cfg.batch_size)
    )
    # The Trainer seeds torch and turns on deterministic algorithms, as training does:
    # measure under them, then give the process its own settings back.
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        with torch.random.fork_rng():
            trainer = StepOnly(kind, params, World(rank=0, size=1, device=torch.device("cpu")))
            gen = torch.Generator().manual_seed(0)
            blur, sharp = (torch.rand(batch, 3, crop, crop, generator=gen) for _ in range(2))
            seconds = timed(lambda: trainer.step(blur, sharp), repeats)
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    return {
        "samples_per_s": round(batch / seconds, 2),
        "step_ms": round(seconds * 1e3, 1),
        "batch_size": batch,
        "crop": crop,
        "how": "Trainer.step on random tensors (no data loading)",
    }


# --------------------------------------------------------------------------- data


class PngPairs:
    """PairStore's pair(i), decoded from the PNGs in data/raw on every call: the cost of
    training without the preprocess stage."""

    def __init__(self, store, table):
        rows = table[table["split"] == store.split].set_index("name")
        self.folder = store.folder
        self.files = [(rows.at[n, "blur_path"], rows.at[n, "sharp_path"]) for n in store.names]

    def pair(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        from deblur.data.images import read_rgb

        blur, sharp = self.files[i]
        return read_rgb(blur), read_rgb(sharp)


def bench_data(params: Params, sizes: Sizes, repeats: int) -> dict[str, Any]:
    """Random training crops per second, one process, from the store and from PNGs."""
    from deblur.data import manifest
    from deblur.data.dataset import CropDataset, PairStore

    if params.preprocess.protocol != "crop":
        return {"skipped": "compares full-resolution crops: needs preprocess.protocol crop"}
    if not (paths.PROCESSED / "train" / "index.csv").is_file() or not paths.MANIFEST.is_file():
        return {"skipped": f"{paths.PROCESSED} not found; run `dvc repro` first"}
    store = PairStore(paths.PROCESSED, "train")
    crop = params.train.gan.crop
    indices = np.arange(len(store))
    out: dict[str, Any] = {"crop": crop, "image": "x".join(map(str, store.shape(0)[::-1]))}
    sources = {"processed": store, "png": PngPairs(store, manifest.read(paths.MANIFEST))}
    for name, source in sources.items():
        data = CropDataset(source, indices, crop=crop, seed=params.seed, length=sizes.crops)
        say(f"data: {name}")
        seconds = timed(lambda data=data: [data[k] for k in range(len(data))], repeats)
        out[f"{name}_samples_per_s"] = round(len(data) / seconds, 1)
    out["speedup"] = round(out["processed_samples_per_s"] / out["png_samples_per_s"], 1)
    return out


# --------------------------------------------------------------------------- dvc


def bench_dvc(repeats: int) -> tuple[float | None, str | None]:
    """(seconds of a no-op `dvc repro`, None) or (None, why it was not timed)."""
    if not Path("dvc.lock").is_file():
        return None, "skipped: no dvc.lock here (the pipeline has not run)"
    dvc = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))
    # Time `dvc repro` only when `dvc status` says it has nothing to do: bench must never
    # start a real pipeline run. The status call doubles as the warm-up.
    status = subprocess.run([dvc, "status", "--json"], capture_output=True, text=True)
    if status.returncode != 0:
        return None, f"skipped: dvc status failed ({(status.stderr.strip() or '?')[:120]})"
    changed = json.loads(status.stdout or "{}")
    if changed:
        return None, f"skipped: pipeline not up to date ({len(changed)} stage(s) changed)"

    def repro() -> None:
        subprocess.run([dvc, "repro"], check=True, capture_output=True)

    say("dvc repro (no-op)")
    try:
        return round(timed(repro, repeats, warmup=False), 2), None
    except subprocess.CalledProcessError as exc:
        reason = exc.stderr.decode(errors="replace").strip().splitlines()
        return None, f"skipped: dvc repro failed ({(reason or ['?'])[-1][:120]})"


# --------------------------------------------------------------------------- report


def measure(params: Params, repeats: int = 5, quick: bool = False) -> dict[str, Any]:
    """Every section; the JSON of `deblur bench --json`."""
    sizes = Sizes(quick)
    # Other processes skew every number here: record how busy the machine was.
    load = round(os.getloadavg()[0], 2)
    say("fp32 matrix-multiply peak")
    peak, peak_how = peak_gflops(sizes.matmul, repeats)
    inference = {kind: bench_inference(kind, params, sizes, repeats) for kind in KINDS}
    for r in inference.values():
        r["peak_fraction"] = round(r["gflops"] / peak, 3)
    train = {}
    for kind in KINDS:
        say(f"train {kind}")
        train[kind] = bench_train(kind, params, sizes, repeats)
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
        "peak_gflops": round(peak, 2),
        "peak_how": peak_how,
    }


def rows(report: dict[str, Any]) -> list[tuple[str, str, str, float, str]]:
    """One (section, model, path, value, unit) per measurement, for reports/bench.csv."""
    out = [
        (
            "machine",
            "",
            f"fp32 matmul peak ({report['peak_how']})",
            report["peak_gflops"],
            "GFLOP/s",
        )
    ]
    for kind, inf in report["inference"].items():
        out.append(("inference", kind, "", inf["macs_per_mp"], "MAC/MP"))
        for name, r in inf["paths"].items():
            if r["status"] == "ok":
                out += [
                    ("inference", kind, name, r["ms_per_mp"], "ms/MP"),
                    ("inference", kind, name, r["gflops"], "GFLOP/s"),
                    ("inference", kind, name, r["max_abs_diff"], "max abs diff vs eager"),
                ]
        out += [
            ("inference", kind, "predict", inf["predict"]["ms_per_mp"], "ms/MP"),
            ("inference", kind, "predict", inf["predict"]["vs_forward"], "x forward"),
            (
                "inference",
                kind,
                "predict folder",
                inf["predict"]["folder_ms_per_image"],
                "ms/image",
            ),
            ("inference", kind, "predict folder", inf["predict"]["folder_vs_forward"], "x forward"),
        ]
    for kind, r in report["train"].items():
        out.append(("train", kind, "Trainer.step", r["samples_per_s"], "samples/s"))
    for name in ("processed", "png"):
        if f"{name}_samples_per_s" in report["data"]:
            out.append(("data", "", name, report["data"][f"{name}_samples_per_s"], "samples/s"))
    if report["dvc_noop_s"] is not None:
        out.append(("dvc", "", "repro (no-op)", report["dvc_noop_s"], "s"))
    return out


def write_csv(report: dict[str, Any], path: Path = CSV) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["section", "model", "path", "value", "unit"])
    writer.writerows(rows(report))
    fsutil.write_text(path, buf.getvalue())


def table(report: dict[str, Any]) -> str:
    """The report as plain-text tables."""
    m = report["machine"]
    lines = [
        f"torch {m['torch']}, {m['threads']} threads on {m['cores']} cores ({m['cpu']}, load "
        f"{m['load_1min_before']}; allocator: {m['allocator']}); "
        f"fp32 matmul peak {report['peak_gflops']:.1f} GFLOP/s ({report['peak_how']}); "
        f"median of {report['repeats']}",
    ]
    for kind, inf in report["inference"].items():
        lines += [
            "",
            f"inference {kind} at {inf['image']} ({inf['source']}): {inf['params']:,} params, "
            f"{inf['macs_per_mp'] / 1e9:.2f} GMAC/MP",
            f"  {'path':<14}{'ms/MP':>9}{'speedup':>9}{'GFLOP/s':>9}{'peak':>6}"
            f"{'max|diff|':>11}{'same':>6}  note",
        ]
        for name, r in inf["paths"].items():
            if r["status"] != "ok":
                lines.append(
                    f"  {name:<14}{'-':>9}{'':>9}{'':>9}{'':>6}{'':>11}{'':>6}  {r['note']}"
                )
                continue
            lines.append(
                f"  {name:<14}{r['ms_per_mp']:>9.1f}{r['speedup_vs_eager']:>9.2f}"
                f"{r['gflops']:>9.1f}{r['gflops'] / report['peak_gflops']:>6.0%}"
                f"{r['max_abs_diff']:>11.1e}{'yes' if r['same_result'] else 'no':>6}  {r['note']}"
            )
        pr = inf["predict"]
        lines += [
            f"  default = {inf['default_vs_eager']:.2f}x eager's time; fastest with eager's "
            f"result: {inf['fastest_same_result']}, without export or compile: "
            f"{inf['fastest_same_result_without_setup']}",
            f"  predict, PNG in and out: one image {pr['ms']:.0f} ms with loading the model = "
            f"{pr['vs_forward']:.2f}x its forward (channels-last), {pr['vs_eager']:.2f}x eager's; "
            f"a folder of {pr['folder_images']} {pr['folder_ms_per_image']:.0f} ms per image = "
            f"{pr['folder_vs_forward']:.2f}x, {pr['folder_vs_eager']:.2f}x",
        ]
    lines += ["", "train (Trainer.step on random tensors, no data loading)"]
    for kind, r in report["train"].items():
        lines.append(
            f"  {kind:<4}{r['samples_per_s']:>8.1f} samples/s  ({r['step_ms']:.0f} ms per step, "
            f"batch {r['batch_size']}, crop {r['crop']})"
        )
    d = report["data"]
    lines += ["", "data (random crops, one process)"]
    if "skipped" in d:
        lines.append(f"  {d['skipped']}")
    else:
        lines.append(
            f"  data/processed {d['processed_samples_per_s']:.0f} samples/s, PNG decoding "
            f"{d['png_samples_per_s']:.0f} samples/s ({d['speedup']:.0f}x; crop {d['crop']} "
            f"of {d['image']} images)"
        )
    dvc = report["dvc_noop_s"]
    lines += ["", f"dvc repro (no-op): {f'{dvc:.2f} s' if dvc is not None else report['dvc_note']}"]
    return "\n".join(lines)


def run(params: Params, repeats: int = 5, quick: bool = False, as_json: bool = False) -> dict:
    """`deblur bench`: measure, write reports/bench.csv, print JSON or tables."""
    report = measure(params, repeats=repeats, quick=quick)
    write_csv(report)
    print(json.dumps(report, indent=2) if as_json else table(report))
    return report
