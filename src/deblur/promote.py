"""`deblur promote`: whether the newest registered version takes the `champion` alias.

The rule: METRICS' first metric decides, each next one breaks an exact tie of those
before it, a full tie keeps the champion. The scores are the test_<metric> tags that
`deblur evaluate` puts on the version it scored.
"""

from __future__ import annotations

from collections.abc import Callable

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


def promote(
    kind: str, dry_run: bool = False, compared: Callable[[], object] | None = None
) -> tuple[bool, str]:
    """Give `champion` to the newest version if it beats the holder (else mark it challenger).

    The move is compare-and-set (registry.move_alias): if another promotion moved
    @champion after this one read it, this one refuses instead of overwriting a winner it
    never compared against. ``compared`` runs between the comparison and the move (the
    race test widens that window with it). The version taking @champion gives up
    @challenger. Returns (promoted, a human-readable account of the comparison).
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
        if compared is not None:
            compared()
        if not dry_run:
            _move(kind, newest.version, holder.version if holder is not None else None)
        verb = "would move" if dry_run else "moved"
        return True, f"{line} vs {against}: {verb} @{CHAMPION} to v{newest.version}"
    if compared is not None:
        compared()
    if not dry_run:
        _move(kind, newest.version, holder.version, alias=CHALLENGER)
    verb = "would stay" if dry_run else "stays"
    return False, (
        f"{line} vs champion v{holder.version}: {describe(old)}: "
        f"@{CHAMPION} {verb} on v{holder.version}, v{newest.version} is @{CHALLENGER}"
    )


def _move(kind: str, version: str, expected: str | None, alias: str = CHAMPION) -> None:
    """Give ``alias`` to ``version`` (@challenger: if @champion is still ``expected``), or
    DeblurError when another promotion moved @champion since it was read."""
    name = kinds.registered_name(kind)
    if alias == CHAMPION:
        rival = registry.move_alias(kind, CHAMPION, version, expected)
    else:
        holder = registry.alias_holder(kind, CHAMPION)
        now = None if holder is None else str(holder.version)
        rival = now if now != (None if expected is None else str(expected)) else None
        if rival is None:
            registry.set_alias(kind, CHALLENGER, version)
    if rival is not None and str(rival) != str(version):  # the same version: the rival agreed
        was = f"v{expected}" if expected else "nobody"
        raise DeblurError(
            f"{name} @{CHAMPION} moved from {was} to v{rival} while v{version} was being "
            f"compared (another promotion ran); nothing changed, run `deblur promote {kind}` again"
        )
    if alias == CHAMPION:
        registry.drop_alias(kind, CHALLENGER, version)
