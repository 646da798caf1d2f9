"""The model registry: versions and their tags, aliases, the champion, and the local cache
of registry checkpoints (deblur.promote decides who gets an alias)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

from deblur import environ, fsutil
from deblur.errors import DeblurError
from deblur.kinds import registered_name
from deblur.tracking import access, store

CHAMPION, CHALLENGER = "champion", "challenger"
_REGISTERED = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


# --------------------------------------------------------------------------- versions, aliases


def tag_version(kind: str, version: str | int, metrics: dict[str, float]) -> None:
    c = store.client()
    for key, value in metrics.items():
        c.set_model_version_tag(registered_name(kind), str(version), key, f"{value:.6g}")


def versions(kind: str) -> list:
    """Every registered version of a model, newest first."""
    name = registered_name(kind)
    found = store.client().search_model_versions(f"name='{name}'")
    return sorted(found, key=lambda mv: int(mv.version), reverse=True)


def version_of_checkpoint(kind: str, checkpoint: str | os.PathLike):
    """The newest registered version built from exactly this checkpoint file, or None."""
    digest = fsutil.sha256(checkpoint)
    return next((mv for mv in versions(kind) if mv.tags.get("checkpoint_sha256") == digest), None)


def alias_holder(kind: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return store.client().get_model_version_by_alias(registered_name(kind), alias)
    except MlflowException as exc:
        access.raise_if_refused(exc, store.tracking_uri())
        return None


def champion(kind: str):
    """The version holding @champion, or None (no tracking store yet, or no champion in it)."""
    return alias_holder(kind, CHAMPION) if store.exists() else None


def set_alias(kind: str, alias: str, version: str | int) -> None:
    name = registered_name(kind)
    with access.acting(f"move @{alias} of {name}", "EDIT on the registered model"):
        store.client().set_registered_model_alias(name, alias, str(version))


def move_alias(kind: str, alias: str, version: str | int, expected: str | None) -> str | None:
    """Compare-and-set: give ``alias`` to ``version`` only if it is still held by
    ``expected`` (a version, or None for nobody). -> None when moved, else the version that
    holds it now. The registry has no atomic swap, so the holder is re-read just before the
    move and once after it: a rival that moved it in between is seen, not overwritten."""
    now = _holder_version(kind, alias)
    if now != (None if expected is None else str(expected)):
        return now
    set_alias(kind, alias, version)
    after = _holder_version(kind, alias)
    return None if after == str(version) else after


def _holder_version(kind: str, alias: str) -> str | None:
    holder = alias_holder(kind, alias)
    return None if holder is None else str(holder.version)


def drop_alias(kind: str, alias: str, version: str | int) -> None:
    """Take ``alias`` away from ``version`` if it holds it (a champion is no challenger)."""
    if _holder_version(kind, alias) == str(version):
        store.client().delete_registered_model_alias(registered_name(kind), alias)


# --------------------------------------------------------------------------- the local cache


def resolve_version(uri: str) -> tuple[str, str]:
    """``models:/NAME@ALIAS`` or ``models:/NAME/V`` -> (NAME, the version it names now)."""
    from mlflow.exceptions import MlflowException

    found = _REGISTERED.match(uri)
    if found is None:
        raise DeblurError(f"{uri} is not a models:/NAME@ALIAS or models:/NAME/VERSION URI")
    store.setup()
    try:
        if found["alias"]:
            mv = store.client().get_model_version_by_alias(found["name"], found["alias"])
        else:
            mv = store.client().get_model_version(found["name"], found["version"])
    except MlflowException as exc:
        raise _not_found(uri, exc) from None
    return found["name"], str(mv.version)


def cache_root() -> Path:
    """Where registry checkpoints are kept: $XDG_CACHE_HOME/deblur/models (~/.cache/...)."""
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or Path.home() / ".cache"
    return Path(base) / "deblur" / "models"


def download_checkpoint(uri: str) -> Path:
    """``models:/deblur-gan@champion`` (or ``/3``, or ``runs:/...``) -> local checkpoint path.

    A registered version never changes, so its checkpoint is downloaded once into
    cache_root(), keyed by tracking store, name and version: the next call (an alias
    resolves in one registry query) neither downloads nor prints. A cached file whose
    SHA-256 is not the one tagged at registration is fetched again.
    """
    from mlflow.exceptions import MlflowException

    store.setup()
    found = _REGISTERED.match(uri)
    if found is None:  # runs:/... and other forms: no version to key a cache on
        return _checkpoint_in(_download(uri, Path(tempfile.mkdtemp(prefix="deblur-model-"))), uri)
    name = found["name"]
    c = store.client()
    try:
        mv = (
            c.get_model_version_by_alias(name, found["alias"])
            if found["alias"]
            else c.get_model_version(name, found["version"])
        )
    except MlflowException as exc:
        raise _not_found(uri, exc) from None
    tracking_store = hashlib.sha256(store.tracking_uri().encode()).hexdigest()[:16]
    home = cache_root() / tracking_store / name / str(mv.version)
    want = mv.tags.get("checkpoint_sha256")
    cached = sorted(home.glob("*.pt")) if home.is_dir() else []
    if cached and (want is None or fsutil.sha256(cached[0]) == want):
        return cached[0]
    home.parent.mkdir(parents=True, exist_ok=True)
    with fsutil.atomic_dir(home) as tmp:
        got = _checkpoint_in(_download(f"models:/{name}/{mv.version}", tmp), uri)
        keep = tmp / got.name
        if got != keep:
            got.replace(keep)  # the checkpoint alone: the logged model's code stays behind
        for extra in [p for p in tmp.iterdir() if p != keep]:
            shutil.rmtree(extra) if extra.is_dir() else extra.unlink()
    return home / keep.name


def _not_found(uri: str, exc) -> DeblurError:
    access.raise_if_refused(exc, store.tracking_uri())  # a refusal is not 'not found'
    return DeblurError(
        f"model {uri} not found in {store.tracking_uri()} ({exc.error_code}); "
        "train and promote first, or pass a checkpoint path"
    )


def _download(uri: str, into: Path) -> Path:
    import mlflow
    from mlflow.exceptions import MlflowException

    # MLflow draws a progress bar per file (52 for a logged model) unless told not to.
    quiet = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    try:
        with environ.scoped(quiet):
            return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(into)))
    except MlflowException as exc:
        raise _not_found(uri, exc) from None


def _checkpoint_in(local: Path, uri: str) -> Path:
    # A logged model keeps its checkpoint under artifacts/; a run path may point at it directly.
    found = [local] if local.is_file() else sorted(local.rglob("*.pt"))
    if not found:
        raise DeblurError(f"{uri} holds no deblur checkpoint; pass a models:/deblur-... URI")
    return found[0]
