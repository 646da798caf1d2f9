"""bench's report as reports/bench.csv rows and as plain-text tables."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from deblur import fsutil, paths


def rows(report: dict[str, Any]) -> list[tuple[str, str, str, float, str]]:
    """One (section, model, path, value, unit) per measurement, for reports/bench.csv."""
    peak = [
        (f"fp32 peak ({report['peak_how']})", report["peak_gflops"]),
        (f"fp32 best product ({report['peak_gemm_how']})", report["peak_gemm_gflops"]),
        (f"fp32 FMA limit ({report['peak_fma_how']})", report["peak_fma_gflops"]),
    ]
    out = [("machine", "", name, gflops, "GFLOP/s") for name, gflops in peak if gflops is not None]
    for kind, inf in report["inference"].items():
        out.append(("inference", kind, "", inf["macs_per_mp"], "MAC/MP"))
        for name, r in inf["paths"].items():
            if r["status"] == "ok":
                out += [
                    ("inference", kind, name, r["ms_per_mp"], "ms/MP"),
                    ("inference", kind, name, r["gflops"], "GFLOP/s"),
                    ("inference", kind, name, r["peak_fraction"], "share of peak"),
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
    first = next(iter(report["inference"].values()), {})
    for name, r in first.get("predict", {}).get("codecs", {}).items():
        if r["status"] == "ok":
            out.append(("inference", "", f"codec {name}", r["ms"], "ms/frame"))
    for kind, r in report["train"].items():
        out += [
            ("train", kind, "Trainer.step", r["samples_per_s"], "samples/s"),
            ("train", kind, "Trainer.step", r["gflops"], "GFLOP/s"),
            ("train", kind, "Trainer.step", r["peak_fraction"], "share of peak"),
        ]
    for name in ("processed", "png"):
        if f"{name}_samples_per_s" in report["data"]:
            out.append(("data", "", name, report["data"][f"{name}_samples_per_s"], "samples/s"))
    if report["dvc_noop_s"] is not None:
        out.append(("dvc", "", "repro (no-op)", report["dvc_noop_s"], "s"))
    return out


def write_csv(report: dict[str, Any], path: Path = paths.BENCH_CSV) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["section", "model", "path", "value", "unit"])
    writer.writerows(rows(report))
    fsutil.write_text(path, buf.getvalue())


def peak_lines(report: dict[str, Any]) -> list[str]:
    """The peak, both figures it is the higher of, and the line saying it was raised."""
    fma = report["peak_fma_gflops"]
    lines = [
        f"fp32 peak {report['peak_gflops']:.1f} GFLOP/s: {report['peak_how']}, "
        + ("above both of" if report["peak_raised"] else "the higher of"),
        f"  {'FMA limit':<13}{f'{fma:.1f}' if fma is not None else '-':>7} GFLOP/s  "
        f"{report['peak_fma_how']}",
        f"  {'best product':<13}{report['peak_gemm_gflops']:>7.1f} GFLOP/s  "
        f"{report['peak_gemm_how']}",
    ]
    if report["peak_raised"]:
        lines.append(f"  {report['peak_raised']}")
    return lines


def table(report: dict[str, Any]) -> str:
    """The report as plain-text tables."""
    m = report["machine"]
    lines = [
        f"torch {m['torch']}, {m['threads']} threads on {m['cores']} cores ({m['cpu']}, load "
        f"{m['load_1min_before']}; allocator: {m['allocator']}); median of {report['repeats']}",
        *peak_lines(report),
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
                f"{r['gflops']:>9.1f}{r['peak_fraction']:>6.0%}"
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
    first = next(iter(report["inference"].values()), {})
    codecs = first.get("predict", {}).get("codecs", {})
    if codecs:
        lines += ["", f"codecs, one {first['image']} frame (same: the pixels Pillow gives)"]
        for name, r in codecs.items():
            if r["status"] != "ok":
                lines.append(f"  {name:<32}{'-':>8}  {r['note']}")
                continue
            size = f"{r['mb']:.2f} MB" if "mb" in r else ""
            same = "same" if r["same_pixels"] else "DIFFERENT"
            lines.append(f"  {name:<32}{r['ms']:>8.1f} ms  {size:>8}  {same}")
    lines += ["", "train (Trainer.step on random tensors, no data loading)"]
    for kind, r in report["train"].items():
        lines.append(
            f"  {kind:<4}{r['samples_per_s']:>8.1f} samples/s  ({r['step_ms']:.0f} ms per step, "
            f"batch {r['batch_size']}, crop {r['crop']}; {r['gflop_per_step']:.1f} GFLOP per step "
            f"= {r['gflops']:.1f} GFLOP/s, {r['peak_fraction']:.0%} of peak)"
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
