"""The `deblur` command line: one thin command per pipeline stage, nothing else.

Each command parses its options, loads params, and calls one function of the package.
Imports are local so `deblur --help` answers without importing torch.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import click
import typer

from deblur.errors import DeblurError

app = typer.Typer(
    help="Single-image motion deblurring: a DVC pipeline of GAN and autoencoder models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
train_app = typer.Typer(help="Train a model on data/processed (a DVC stage each).")
app.add_typer(train_app, name="train")

ParamsOpt = Annotated[
    Path | None,
    typer.Option("--params", "-p", help="Params file to use instead of ./params.yaml."),
]


def _params(path: Path | None):
    from deblur import config

    return config.load(path)


@app.command()
def download(params: ParamsOpt = None) -> None:
    """Fetch or render the raw dataset into data/raw/<data.name> (GoPro layout).

    data.source picks the origin: `synthetic` (default, offline), `gopro` (data.url, checked
    against data.sha256, resumable) or `folder` (a local GoPro-layout copy in data.folder).
    """
    from deblur.data import download as dl

    dl.run(_params(params))


@app.command()
def validate(params: ParamsOpt = None) -> None:
    """Build data/manifest.csv and check it with Great Expectations; fail on a bad dataset."""
    from deblur.data import validate as val

    val.run(_params(params))


@app.command()
def preprocess(params: ParamsOpt = None) -> None:
    """Decode every pair once into data/processed/ (uint8 arrays, memory-mapped at train time)."""
    from deblur.data import preprocess as pre

    pre.run(_params(params))


def _train(kind: str, params: Path | None, device: str, resume: bool) -> None:
    from deblur.train import run

    run(kind, _params(params), device=device, resume=resume)


DeviceOpt = Annotated[
    str, typer.Option(help="auto (CUDA if present, else CPU), cpu, cuda or cuda:N.")
]
ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="Continue from the last checkpoint in models/.")
]


@train_app.command("gan")
def train_gan(params: ParamsOpt = None, device: DeviceOpt = "auto", resume: ResumeOpt = False):
    """Train the GAN (generator + discriminator) -> models/gan.pt and its metrics and curves."""
    _train("gan", params, device, resume)


@train_app.command("ae")
def train_ae(params: ParamsOpt = None, device: DeviceOpt = "auto", resume: ResumeOpt = False):
    """Train the attention autoencoder -> models/ae.pt and its metrics and curves."""
    _train("ae", params, device, resume)


@app.command()
def info(
    params: ParamsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Print each model's parameter count and multiply-accumulates per megapixel."""
    from deblur.models import describe

    describe(_params(params), as_json=as_json)


def main() -> None:
    """Console entry point: user mistakes end in one line and a non-zero exit, never a traceback."""
    try:
        app(standalone_mode=False)
    except DeblurError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
