"""bench's float32 peak: the cores' FMA limit from fixed CPU flags and clocks, worked out by
hand; the higher of it and the best measured product; and no share above 100%."""

from __future__ import annotations

from pathlib import Path

import pytest

from deblur.bench import output as bench_output
from deblur.bench import peak as peaks

AVX512 = "fpu sse sse2 avx fma avx2 avx512f avx512bw avx512vl"
AVX2 = "fpu sse sse2 avx fma avx2"


def cpuinfo(tmp_path: Path, flags: str, mhz: tuple[float, ...] = (), extra: str = "") -> Path:
    """A /proc/cpuinfo with one block per clock given (one block if none)."""
    blocks = [
        f"processor\t: {i}\n{extra}flags\t\t: {flags}\n"
        + (f"cpu MHz\t\t: {clock:.3f}\n" if clock else "")
        for i, clock in enumerate(mhz or (0,))
    ]
    path = tmp_path / "cpuinfo"
    path.write_text("\n".join(blocks))
    return path


def cpu_dir(tmp_path: Path, max_khz: dict | None = None, siblings: dict | None = None) -> Path:
    """A /sys/devices/system/cpu with cpufreq maxima and hyperthread siblings as given."""
    root = tmp_path / "cpu"
    root.mkdir()
    for cpu, khz in (max_khz or {}).items():
        (root / f"cpu{cpu}" / "cpufreq").mkdir(parents=True)
        (root / f"cpu{cpu}" / "cpufreq" / "cpuinfo_max_freq").write_text(f"{khz}\n")
    for cpu, sibs in (siblings or {}).items():
        (root / f"cpu{cpu}" / "topology").mkdir(parents=True)
        (root / f"cpu{cpu}" / "topology" / "thread_siblings_list").write_text(f"{sibs}\n")
    return root


def test_avx512_limit_takes_the_turbo_clock_and_counts_hyperthreads_once(tmp_path):
    # cpufreq's maximum (3.5 GHz) wins over cpuinfo's momentary "cpu MHz"; 4 threads on
    # 4 CPUs that are 2 cores with 2 hyperthreads each compute on 2 cores.
    sysfs = cpu_dir(
        tmp_path, {0: 3_000_000, 1: 3_500_000}, {0: "0,2", 2: "0,2", 1: "1,3", 3: "1,3"}
    )
    info = cpuinfo(tmp_path, AVX512, mhz=(1800.0, 2000.0))
    limit = peaks.fma_limit(info, sysfs, threads=4, cpus={0, 1, 2, 3})
    assert (limit.lanes, limit.units, limit.ghz, limit.cores) == (16, 2, 3.5, 2)
    assert limit.gflops == pytest.approx(16 * 2 * 2 * 3.5 * 2)  # 448 GFLOP/s
    assert limit.clock_from == "cpufreq max"


def test_avx2_limit_from_cpuinfo_mhz_and_torch_threads(tmp_path):
    # No cpufreq (a VM): the highest "cpu MHz"; 2 threads on 8 CPUs use 2 cores. The
    # "vmx flags" line of newer kernels is not the CPU's flags.
    info = cpuinfo(tmp_path, AVX2, mhz=(2445.404, 2300.0), extra="vmx flags\t: avx512f\n")
    limit = peaks.fma_limit(info, cpu_dir(tmp_path), threads=2, cpus=set(range(8)))
    assert (limit.isa, limit.lanes, limit.units, limit.cores) == ("avx2", 8, 2, 2)
    assert limit.gflops == pytest.approx(8 * 2 * 2 * 2.445404 * 2)  # 156.5 GFLOP/s
    assert "8 fp32 lanes (avx2) x 2 FMA units x 2 FLOP x 2.45 GHz" in limit.describe()


@pytest.mark.parametrize(
    ("flags", "gflops"),
    [
        ("fpu sse sse2 avx", 8 * 1 * 2 * 3.0 * 3),  # AVX without FMA: one mul and one add pipe
        ("fpu sse sse2", 4 * 1 * 2 * 3.0 * 3),
        ("fpu sse sse2 fma", 8 * 2 * 2 * 3.0 * 3),  # FMA implies 256-bit vectors
    ],
)
def test_limit_without_fma_or_avx(tmp_path, flags, gflops):
    limit = peaks.fma_limit(cpuinfo(tmp_path, flags, mhz=(3000.0,)), tmp_path, 8, {0, 1, 2})
    assert limit.gflops == pytest.approx(gflops)


def test_no_limit_without_known_flags_or_a_clock(tmp_path):
    assert peaks.fma_limit(tmp_path / "missing", tmp_path, 2, {0, 1}) is None  # not Linux
    assert peaks.fma_limit(cpuinfo(tmp_path, "fp asimd", (2000.0,)), tmp_path, 2, {0}) is None
    assert peaks.fma_limit(cpuinfo(tmp_path, AVX2), tmp_path, 2, {0}) is None  # no clock


def test_peak_is_the_higher_figure_and_says_which(tmp_path):
    fma = peaks.fma_limit(cpuinfo(tmp_path, AVX2, mhz=(2000.0,)), tmp_path, 2, {0, 1})  # 128
    peak = peaks.combine(100.004, "numpy 2048x2048", fma)
    assert (peak.gflops, peak.how) == (128.0, "FMA limit")
    assert (peak.gemm_gflops, peak.fma_gflops) == (100.0, 128.0)
    # A measured product above the limit (a clock read low) is the peak instead.
    peak = peaks.combine(300.0, "oneDNN conv 3x3 256ch 128x128", fma)
    assert (peak.gflops, peak.how) == (300.0, "measured oneDNN conv 3x3 256ch 128x128")
    assert peak.fma_gflops == 128.0
    peak = peaks.combine(90.0, "torch.mm 4096x4096", None)
    assert (peak.gflops, peak.fma_gflops) == (90.0, None)
    fields = peak.fields()
    assert fields["peak_gflops"] == 90.0 and fields["peak_gemm_how"] == "torch.mm 4096x4096"
    assert "-" in bench_output.peak_lines(fields)[1]  # no FMA limit: a dash, not a crash


def test_no_share_exceeds_the_peak(tmp_path):
    """The AVX-512 case that gave 156%: the GAN at 381 GFLOP/s against a 244 GFLOP/s
    matmul, and a limit worked out from a clock read at half the turbo."""
    sysfs = cpu_dir(tmp_path)
    fma = peaks.fma_limit(cpuinfo(tmp_path, AVX512, mhz=(1500.0,)), sysfs, 4, {0, 1, 2, 3})
    peak = peaks.combine(244.0, "torch.mm 4096x4096", fma)
    assert peak.gflops == 384.0 and peak.raised is None  # 16 x 2 x 2 x 1.5 GHz x 4
    measured = {"inference gan default": 381.0, "inference gan compile": 402.5, "train gan": 90.0}
    raised = peaks.raise_to_measured(peak, measured)
    assert raised.gflops == 402.5 and raised.how == "measured inference gan compile"
    assert (raised.gemm_gflops, raised.fma_gflops) == (244.0, 384.0)  # both still shown
    assert all(peaks.share(g, raised) <= 1 for g in measured.values())
    assert peaks.share(402.5, raised) == 1.0
    lines = bench_output.peak_lines(raised.fields())
    assert lines[-1].strip() == raised.raised
    assert "peak raised from 384.0 to 402.5 GFLOP/s: inference gan compile" in raised.raised
    # Nothing above the peak: left as it was, no line.
    assert peaks.raise_to_measured(peak, {"inference gan default": 381.0}) == peak
    assert peaks.raise_to_measured(peak, {}) == peak
    assert len(bench_output.peak_lines(peak.fields())) == 3
