"""`deblur train gan|ae`: the stage (stage.py), its loop, data, losses, checkpoints, torchrun."""
