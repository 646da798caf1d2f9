"""What a batch job has to do: predict's inputs and outputs, less what is already written.

Inputs are found exactly as `deblur predict` finds them (files, folders, globs,
``recursive``), and each one's output is where predict would write it. An output that
exists is a finished frame: every file is written under a temporary name and renamed, so
none is ever half there. A rerun skips those (``overwrite`` redoes them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from deblur.predict import Inputs, expand_inputs, plan_outputs


@dataclass
class Plan:
    todo: dict[Path, Path] = field(default_factory=dict)  # input -> its output
    done: dict[Path, Path] = field(default_factory=dict)  # written by an earlier run
    found: Inputs = field(default_factory=Inputs)


def plan(inputs: list[str | os.PathLike], out_dir: Path, recursive: bool, overwrite: bool) -> Plan:
    found = expand_inputs(inputs, recursive, out_dir)
    # overwrite=True: predict's checks (collisions, inputs overwritten) without refusing
    # what exists, which here means "done".
    outputs = plan_outputs(found.files, out_dir, overwrite=True)
    result = Plan(found=found)
    for (src, _), dst in zip(found.files, outputs, strict=True):
        if dst.exists() and not overwrite:
            result.done[src] = dst
        else:
            result.todo[src] = dst
    return result
