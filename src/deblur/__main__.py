"""`python -m deblur` (and `torchrun -m deblur ...`) runs the CLI."""

from deblur.cli import main

main()
