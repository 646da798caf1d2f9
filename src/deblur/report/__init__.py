"""`deblur report`: figures and the Markdown/HTML report of a pipeline run."""

from deblur.report.render import run

__all__ = ["run"]
