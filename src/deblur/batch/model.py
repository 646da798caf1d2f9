"""The model of a batch job, resolved once, on the driver, to one MLflow model.

``models:/NAME@ALIAS`` is looked up here and the job scores ``models:/NAME/VERSION``: an
alias moved while the job runs changes nothing in it. A checkpoint (``gan``, ``ae``, a
.pt file) is saved as the same MLflow model the pipeline registers, in a temporary folder.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from deblur import fsutil
from deblur import spec as specs
from deblur.errors import DeblurError
from deblur.tracking import flavour, registry, store


@dataclass(frozen=True)
class Resolved:
    uri: str  # what spark_udf loads: models:/NAME/VERSION, runs:/... or a local folder
    version: str  # recorded per manifest row: the registry version, or the file's digest
    label: str  # for people: "deblur-gan v3 (models:/deblur-gan@champion)"


def resolve(spec: str) -> Resolved:
    """A --model spec -> the one MLflow model the whole job scores."""
    if spec.startswith("models:/"):
        name, version = registry.resolve_version(spec)
        uri = f"models:/{name}/{version}"
        label = f"{name} v{version}" + (f" ({spec})" if spec != uri else "")
        return _checked(Resolved(uri, version, label), spec)
    if spec.startswith("runs:/"):
        store.setup()
        return _checked(Resolved(spec, spec.split("/")[1], spec), spec)
    path = specs.resolve(spec)
    if path.suffix == ".onnx":
        raise DeblurError(
            f"{path}: batch scores MLflow models; pass the .pt checkpoint or a models:/ URI"
        )
    folder = Path(tempfile.mkdtemp(prefix="deblur-batch-model-")) / "model"
    store.quiet_mlflow()
    flavour.save_model(path, folder)
    digest = fsutil.sha256(path)[:12]
    return Resolved(str(folder), f"sha256:{digest}", f"{path} (sha256 {digest}, logged now)")


def _checked(resolved: Resolved, spec: str) -> Resolved:
    """A model logged before batch scoring ignores ``errors="rows"``: say so up front."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        info = mlflow.models.get_model_info(resolved.uri)
    except (MlflowException, OSError) as exc:
        raise DeblurError(f"model {spec} cannot be read ({str(exc)[:160]})") from None
    params = info.signature.params if info.signature is not None else None
    if params is None or "errors" not in [p.name for p in params.params]:
        raise DeblurError(
            f"{resolved.label} was logged before batch scoring (its signature has no "
            "`errors` param); register it again (`deblur train`), or pass its checkpoint"
        )
    return resolved
