"""deblur: single-image motion deblurring in a reproducible DVC + MLflow pipeline."""

__version__ = "0.1.0"
