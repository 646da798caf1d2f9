"""`deblur serve`: the demo web page and its small JSON/PNG API (see app.py)."""
