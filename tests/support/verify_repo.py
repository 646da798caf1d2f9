"""A git repo as `deblur verify` reads it: committed metrics, run-info and a README results
table."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

EVAL = {
    "gan": {"psnr": 26.3353, "ssim": 0.7645, "gain_db": 0.6734, "ssim_gain": 0.0091,
            "images": 32},
    "ae": {"psnr": 26.2713, "ssim": 0.7653, "gain_db": 0.6094, "ssim_gain": 0.0099,
           "images": 32},
    "baseline": {"psnr": 25.6198, "ssim": 0.7518, "gain_db": -0.0421, "ssim_gain": -0.0036,
                 "images": 32},
    "blurry": {"psnr": 25.6619, "ssim": 0.7554, "images": 32},
}  # fmt: skip


# run-info/evaluate.json: the timings (and ids) no DVC metric holds.
INFO = {
    "mlflow_run_id": "abc",
    "device": "cpu",
    "timings": {"gan": {"ms_per_mp": 1295.43}, "ae": {"ms_per_mp": 689.79},
                "baseline": {"ms_per_mp": 89.12}},
}  # fmt: skip


DATA = {"pairs": 128, "test": {"pairs": 32, "psnr_blur": 25.6619, "blur_lapvar": 0.001404}}


# The README's format, as verify parses it: a table under '## Results' with these columns.
README = """# deblur

## Results

Some prose.

| model | params | PSNR (dB) | SSIM | ms / MP | protocol | source |
| --- | ---: | ---: | ---: | ---: | --- | --- |
| GAN (this project) | 2.13M | 26.34 | 0.7645 | 1295 | full | measured (synthetic) |
| Autoencoder (this project) | 1.82M | 26.27 | 0.7653 | 690 | full | measured (synthetic) |
| unsharp mask (radius=1, amount=0.5) | 0 | 25.62 | 0.7518 | 89 | full | measured (synthetic) |
| blurry input | 0 | 25.66 | 0.7554 | 0 | full | measured (synthetic) |
| Kupyn et al. | – | 28.70 | 0.9580 |  | full | reported (GoPro, reference study) |

## Next section
"""


def git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=root,
        check=True,
        capture_output=True,
    )


def write(root: Path, eval_json=EVAL, data_json=DATA, readme=README, info=INFO) -> None:
    (root / "metrics").mkdir(exist_ok=True)
    (root / "run-info").mkdir(exist_ok=True)
    (root / "metrics" / "eval.json").write_text(json.dumps(eval_json))
    (root / "metrics" / "data.json").write_text(json.dumps(data_json))
    (root / "run-info" / "evaluate.json").write_text(json.dumps(info))
    (root / "README.md").write_text(readme)


def moved(eval_json: dict, kind: str, figure: str, delta: float) -> dict:
    out = json.loads(json.dumps(eval_json))
    out[kind][figure] = round(out[kind][figure] + delta, 4)
    return out
