"""`deblur promote`: whether the newest registered version takes the `champion` alias.

The rule: METRICS' first metric decides, each next one breaks an exact tie of those
before it, a full tie keeps the champion. The scores are the test_<metric> tags that
`deblur evaluate` puts on the version it scored.
"""

from __future__ import annotations

from deblur import kinds
from deblur.errors import DeblurError
from deblur.metrics import METRICS
from deblur.tracking import registry

CHAMPION, CHALLENGER = registry.CHAMPION, registry.CHALLENGER


def scores(mv) -> tuple[float, ...] | None:
    """The version's test scores in METRICS order, or None if evaluate has not tagged it."""
    if mv is None or not all(f"test_{name}" in mv.tags for name in METRICS):
        return None
    return tuple(float(mv.tags[f"test_{name}"]) for name in METRICS)


def beats(new: tuple[float, ...], old: tuple[float, ...]) -> bool:
    """Lexicographic: the first metric decides, the next break exact ties; a tie keeps."""
    return new > old


def describe(values: tuple[float, ...]) -> str:
    """'PSNR 26.341 dB, SSIM 0.7645'."""
    parts = []
    for (name, metric), value in zip(METRICS.items(), values, strict=True):
        unit = " dB" if "dB" in metric.label else ""
        parts.append(f"{name.upper()} {value:.{metric.decimals + 1}f}{unit}")
    return ", ".join(parts)


def promote(kind: str, dry_run: bool = False) -> tuple[bool, str]:
    """Give `champion` to the newest version if it beats the holder (else mark it challenger).

    Returns (promoted, a human-readable account of the comparison).
    """
    name = kinds.registered_name(kind)
    newest = next(iter(registry.versions(kind)), None)
    if newest is None:
        raise DeblurError(f"{name} has no registered version; run `deblur train {kind}` first")
    new = scores(newest)
    if new is None:
        raise DeblurError(
            f"{name} v{newest.version} has no test scores; run `deblur evaluate` first"
        )
    holder = registry.alias_holder(kind, CHAMPION)
    old = scores(holder)
    line = f"{name} v{newest.version}: {describe(new)}"
    if holder is not None and holder.version == newest.version:
        return False, f"{line} already holds @{CHAMPION}; nothing to do"
    if holder is None or old is None or beats(new, old):
        against = (
            "no current champion"
            if holder is None
            else f"champion v{holder.version}: {describe(old)}"
            if old
            else f"champion v{holder.version} has no scores"
        )
        if not dry_run:
            registry.set_alias(kind, CHAMPION, newest.version)
        verb = "would move" if dry_run else "moved"
        return True, f"{line} vs {against}: {verb} @{CHAMPION} to v{newest.version}"
    if not dry_run:
        registry.set_alias(kind, CHALLENGER, newest.version)
    verb = "would stay" if dry_run else "stays"
    return False, (
        f"{line} vs champion v{holder.version}: {describe(old)}: "
        f"@{CHAMPION} {verb} on v{holder.version}, v{newest.version} is @{CHALLENGER}"
    )
