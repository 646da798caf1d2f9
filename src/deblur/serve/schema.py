"""What /openapi.json says of each endpoint: its form fields and every status it returns.

The upload endpoints read their body themselves (streamed under the byte cap, uploads.py),
so FastAPI cannot see their form: it is declared here by hand, with the JSON error every
refusal carries. A client generated from the schema knows each status it may get.
"""

from __future__ import annotations

from deblur.kinds import KINDS
from deblur.serve.uploads import ACCEPTED

ERROR = {
    "type": "object",
    "properties": {"detail": {"type": "string", "description": "one line: what and the fix"}},
    "required": ["detail"],
}

# Why each status comes back, for the schema's descriptions.
WHY = {
    400: "malformed form, or an unknown model",
    401: "the server has a token and the request does not carry it",
    403: "a write sent by another site's page",
    404: "the model is not available, or no such job (or its result expired)",
    408: "the upload's body did not arrive within serve.body_timeout_s",
    409: "the job has not finished",
    410: "the job was cancelled",
    413: "over the upload's byte or pixel cap",
    415: "not multipart/form-data, or not a " + ACCEPTED + " file",
    421: "a Host name the server does not answer to (serve.allowed_hosts)",
    422: "the image is damaged, or the form has no file",
    499: "the client went away before the answer (it never sees this)",
    500: "a bug or a broken model; the server log has the details",
    503: "busy: the queue, the upload slots or the disk budget is full (see Retry-After)",
}

PNG = {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}


def errors(*codes: int) -> dict:
    """The ``responses`` entries for these error statuses (plus 421, which any may get)."""
    out = {}
    for code in sorted({*codes, 421}):
        entry = {"description": WHY[code], "content": {"application/json": {"schema": ERROR}}}
        if code == 503:
            entry["headers"] = {
                "Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}
            }
        out[code] = entry
    return out


def upload_form(model: bool = True) -> dict:
    """``openapi_extra`` declaring the multipart form: ``file`` and, for a model, ``model``."""
    properties = {
        "file": {"type": "string", "format": "binary", "description": f"a {ACCEPTED} file"}
    }
    if model:
        properties["model"] = {"type": "string", "enum": list(KINDS), "default": KINDS[0]}
    body = {"type": "object", "required": ["file"], "properties": properties}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": body}}}}


JOB = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "state": {"type": "string", "enum": ["queued", "running", "done", "failed", "cancelled"]},
        "model": {"type": "string"},
        "name": {"type": "string"},
        "width": {"type": "integer"},
        "height": {"type": "integer"},
        "position": {"type": "integer"},
        "tiles": {"type": "object"},
        "eta_s": {"type": "number"},
    },
    "required": ["id", "state"],
}
JOB_JSON = {"content": {"application/json": {"schema": JOB}}}

UPLOAD_ERRORS = (400, 401, 403, 408, 413, 415, 422, 500, 503)
