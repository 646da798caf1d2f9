"""`deblur report` (render.py): figures and the Markdown/HTML report of a pipeline run."""
