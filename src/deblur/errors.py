"""User-facing errors: one line that names the problem and the fix, never a traceback."""


class DeblurError(Exception):
    """A mistake the user can fix (bad params, missing file, wrong checksum, ...).

    The CLI prints ``error: <message>`` and exits with ``exit_code``; anything else that
    escapes is a bug in deblur and keeps its traceback.
    """

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(DeblurError):
    """params.yaml (or a --params file) is invalid: exit code 2, like a usage error."""

    exit_code = 2


class DataError(DeblurError):
    """The dataset is missing, corrupt or fails validation."""
