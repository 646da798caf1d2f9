"""`deblur evaluate` (protocol.py): the classical baseline and the tables it writes.

The protocol is described in docs/architecture.md ("Evaluation protocol").
"""
