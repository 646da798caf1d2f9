"""The `deblur` command line: one thin command per pipeline stage, nothing else.

Each command parses its options, loads params, and calls one function of the package.
Imports are local (inside each command) so `deblur --help` answers without importing torch:
that, not an import cycle, is why they are there.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Annotated

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


def _dump(p) -> dict:
    """Params as a nested mapping of JSON types, as params.yaml spells them."""
    return p.model_dump(mode="json", by_alias=True)


def _params_or_defaults(path: Path | None):
    """``path``, else ./params.yaml, else (outside a project) the defaults: the tools that
    only need a model (predict, serve) run anywhere."""
    from deblur import config

    return _params(path) if path or config.DEFAULT_PARAMS.is_file() else config.parse({})


@app.command()
def download(params: ParamsOpt = None) -> None:
    """Fetch or render the raw dataset into data/raw/<data.name> (GoPro layout).

    data.source picks the origin: `synthetic` (default, offline), `gopro` (data.url, checked
    against data.sha256, resumable) or `folder` (a local GoPro-layout copy in data.folder).
    """
    p = _params(params)
    from deblur.data import download as dl

    dl.run(p.data, p.seed)


@app.command()
def validate(params: ParamsOpt = None) -> None:
    """Build data/manifest.csv and check it with Great Expectations; fail on a bad dataset."""
    p = _params(params)
    from deblur.data import validate as val

    val.run(p.validate_, p.data.name)


@app.command()
def preprocess(params: ParamsOpt = None) -> None:
    """Decode every pair once into data/processed/ (uint8 arrays, memory-mapped at train time)."""
    p = _params(params)
    from deblur.data import preprocess as pre

    pre.run(p.preprocess)


def _train(kind: str, params: Path | None, device: str, resume: bool) -> None:
    p = _params(params)
    from deblur.train.stage import run

    run(kind, p.train, p.seed, p.preprocess.protocol, device=device, resume=resume)


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
def evaluate(params: ParamsOpt = None, device: DeviceOpt = "auto") -> None:
    """Score both models, the blurry input and a classical baseline on the test split.

    Writes reports/per_image.csv, reports/results.csv (with the reference study's published
    GoPro rows, marked as reported) and metrics/eval.json, and logs them to MLflow.
    """
    p = _params(params)
    from deblur.evaluate.stage import run

    # The whole params go to MLflow only: the pipeline run's row in `deblur runs`.
    run(p.evaluate, p.preprocess, p.data.name, _dump(p), device=device)


@app.command()
def report(params: ParamsOpt = None) -> None:
    """Render reports/report.md and a self-contained reports/report.html with their figures."""
    p = _params(params)
    from deblur.report.render import run

    run(_dump(p))


@app.command()
def predict(
    inputs: Annotated[
        list[str], typer.Argument(metavar="PATH", help="Image files, folders or quoted globs.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the deblurred PNGs.")],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="gan, ae, a .pt or .onnx file, or models:/NAME@ALIAS. Default: the GAN "
            "champion from the registry if there is one, else models/gan.pt.",
        ),
    ] = None,
    tile: Annotated[
        int | None, typer.Option(min=32, help="Tile side; default params evaluate.tile.")
    ] = None,
    overlap: Annotated[
        int | None, typer.Option(min=0, help="Tile overlap; default params evaluate.overlap.")
    ] = None,
    params: ParamsOpt = None,
    device: DeviceOpt = "auto",
    compile_model: Annotated[
        bool,
        typer.Option(
            "--compile",
            help="torch.compile the model first: seconds of compiling up front, then "
            "faster per image (deblur bench measures both); pays off on many frames.",
        ),
    ] = False,
    flips: Annotated[
        bool,
        typer.Option(
            "--flips",
            help="Average the model over the image's four flips (left-right, up-down, "
            "both): 4x the time, a small gain (the report measures it).",
        ),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace results already in OUT.")
    ] = False,
    recursive: Annotated[
        bool,
        typer.Option(
            "--recursive", "-r", help="Search subfolders too; OUT mirrors the input tree."
        ),
    ] = False,
) -> None:
    """Deblur your own images into OUT as PNGs with the same names (inputs are never touched).

    Gray stays gray, 16 bits stay 16 bits, alpha and the ICC profile are kept; what a
    format cannot keep (CMYK, palette) is said per file (README, Formats).
    """
    p = _params_or_defaults(params)
    from deblur import spec
    from deblur.predict import predict as run

    ev = p.evaluate
    model = model or spec.default("gan")
    overlap = ev.overlap if overlap is None else overlap
    run(
        inputs,
        out,
        model,
        tile or ev.tile,
        overlap,
        device,
        compile_model=compile_model,
        overwrite=overwrite,
        recursive=recursive,
        flips=flips,
    )


@app.command()
def profile(
    name: Annotated[str, typer.Argument(help="A file of pipeline/profiles/, without .yaml.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write here (params.yaml to apply it).")
    ] = None,
) -> None:
    """Print a profile applied over params.yaml, or write it with -o (then `dvc repro`)."""
    from deblur import config, fsutil

    text = config.render_profile(name)
    if out is None:
        typer.echo(text, nl=False)
    else:
        fsutil.write_text(out, text)
        typer.echo(f"wrote {out} (profile {name} over params.yaml)")


@app.command()
def info(
    params: ParamsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Print each model's parameter count and multiply-accumulates per megapixel."""
    p = _params(params)
    from deblur.models import describe

    describe(p, as_json=as_json)


@app.command()
def bench(
    params: ParamsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    repeats: Annotated[int, typer.Option(min=1, help="Timed runs per number (median).")] = 5,
    quick: Annotated[
        bool, typer.Option("--quick", help="Tiny sizes, 1 repeat, no torch.compile: a check.")
    ] = False,
    serve_load: Annotated[
        bool,
        typer.Option(
            "--serve", help="Instead: load-test `deblur serve` on loopback (see --clients)."
        ),
    ] = False,
    clients: Annotated[
        str, typer.Option(help="With --serve: concurrent clients per level, comma-separated.")
    ] = "1,8,50",
    sizes: Annotated[
        str, typer.Option(help="With --serve: photo sizes, from 720p and 20mp.")
    ] = "720p,20mp",
    tracking_cost: Annotated[
        bool,
        typer.Option(
            "--tracking",
            help="Instead: MLflow logging's cost per training step, local SQLite against "
            "a tracking server with and without logins (started on loopback).",
        ),
    ] = False,
    batch_paths: Annotated[
        bool,
        typer.Option(
            "--batch",
            help="Instead: 720p frames through predict, batch on local[2] and batch on a "
            "standalone master + worker; frames/s, MP/s, start-up; a 20 MP photo's memory.",
        ),
    ] = False,
    frames: Annotated[int, typer.Option(min=3, help="With --batch: frames per path.")] = 16,
) -> None:
    """Measure inference per path, training, data loading and a no-op `dvc repro`.

    Each number is a median after a warm-up; all of them also go to reports/bench.csv.
    With --serve: the demo server's throughput, latency, 503s and RSS under load instead.
    With --batch: predict against batch on Spark (docs/batch.md) instead.
    """
    if tracking_cost:
        import json

        from deblur.bench import tracking as cost

        results = cost.bench_tracking()
        typer.echo(json.dumps(results, indent=2) if as_json else cost.text(results))
        return
    if batch_paths:
        from deblur.bench import batch as spark

        spark.run(_params(params), frames=frames, quick=quick, as_json=as_json)
        return
    if serve_load:
        from deblur.bench import serve as load

        try:
            counts = [int(c) for c in clients.split(",") if c.strip()]
        except ValueError:
            raise DeblurError(f"--clients {clients}: give whole numbers, e.g. 1,8,50") from None
        if not counts or min(counts) < 1:
            raise DeblurError(f"--clients {clients}: give positive numbers, e.g. 1,8,50")
        names = ["tiny", "small"] if quick and sizes == "720p,20mp" else sizes.split(",")
        load.run(counts, [n.strip() for n in names], quick=quick, as_json=as_json)
        return
    p = _params(params)
    from deblur.bench import run

    run(p, repeats=1 if quick else repeats, quick=quick, as_json=as_json)


@app.command()
def batch(
    inputs: Annotated[
        list[str], typer.Argument(metavar="PATH", help="Image files, folders or quoted globs.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the PNGs and manifest.csv.")],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="models:/NAME@ALIAS or models:/NAME/VERSION, runs:/..., gan, ae or a .pt "
            "file. Default: the GAN champion from the registry if there is one, else "
            "models/gan.pt.",
        ),
    ] = None,
    master: Annotated[
        str,
        typer.Option(
            help="local[N], local[*], spark://HOST:PORT, yarn, k8s://...: any Spark master."
        ),
    ] = "local[*]",
    conf: Annotated[
        list[str] | None,
        typer.Option(help="A Spark setting KEY=VALUE (repeatable), e.g. spark.executor.memory=8g."),
    ] = None,
    tile: Annotated[
        int | None, typer.Option(min=32, help="Tile side; default params evaluate.tile.")
    ] = None,
    overlap: Annotated[
        int | None, typer.Option(min=0, help="Tile overlap; default params evaluate.overlap.")
    ] = None,
    params: ParamsOpt = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Redo results already in OUT (default: skip).")
    ] = False,
    recursive: Annotated[
        bool,
        typer.Option(
            "--recursive", "-r", help="Search subfolders too; OUT mirrors the input tree."
        ),
    ] = False,
) -> None:
    """Deblur a whole photo archive on Apache Spark: the same PNGs as predict, one per input.

    The model is resolved once (an alias moving mid-job changes nothing) and scored through
    mlflow.pyfunc.spark_udf. OUT/manifest.csv has a row per input (written, skipped,
    failed); a bad file is a row, never a failed job; a rerun skips what is written.
    docs/batch.md: clusters, memory, the benchmark.
    """
    p = _params_or_defaults(params)
    from deblur import spec
    from deblur.batch.job import run
    from deblur.batch.session import parse_conf

    ev = p.evaluate
    run(
        inputs,
        out,
        model or spec.default("gan"),
        master=master,
        recursive=recursive,
        overwrite=overwrite,
        tile=tile or ev.tile,
        overlap=ev.overlap if overlap is None else overlap,
        conf=parse_conf(conf or []),
    )


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    params: ParamsOpt = None,
    device: DeviceOpt = "auto",
    token: Annotated[
        str | None,
        typer.Option(
            envvar="DEBLUR_SERVE_TOKEN",
            help="Every API call must carry it (Authorization: Bearer); the printed "
            "address gives it to the page. Without one, a --host beyond loopback warns.",
            show_envvar=True,
        ),
    ] = None,
) -> None:
    """Start the demo web page: upload a photo, compare GAN and autoencoder, download.

    Serves each registry champion, or models/<kind>.pt when the registry has none.
    Limits, hosts, origins and the token: docs/serving.md.
    """
    p = _params_or_defaults(params)
    from deblur.serve.server import run

    run(host, port, p.serve.tile or p.evaluate.tile, p.evaluate.overlap, device, p.serve, token)


@app.command()
def export(
    fmt: Annotated[str, typer.Option("--format", "-f", help="Only onnx for now.")] = "onnx",
    model: Annotated[
        str, typer.Option("--model", "-m", help="gan, ae, a .pt file or models:/NAME@ALIAS.")
    ] = "gan",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Default: beside the .pt; ./deblur-KIND.onnx for models:/."
        ),
    ] = None,
) -> None:
    """Export a model to ONNX (any batch, height and width), checked against PyTorch.

    The file runs in ONNX Runtime through `deblur predict --model FILE.onnx`.
    """
    if fmt != "onnx":
        raise DeblurError(f"unknown export format '{fmt}'; use onnx")
    from deblur.export import export_onnx

    path, diffs = export_onnx(model, out)
    for shape, diff in diffs:
        typer.echo(f"check {'x'.join(map(str, shape))}: max |onnx - torch| = {diff:.2e}")
    typer.echo(f"wrote {path}")


NOT_PROMOTED = 3


@app.command()
def promote(
    kind: Annotated[str, typer.Argument(help="gan or ae.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Compare only; change nothing.")
    ] = False,
) -> None:
    """Move the registry alias `champion` to the newest version if it beats the holder.

    Compares test PSNR (SSIM breaks a tie) as tagged by `deblur evaluate`. Exit code 0: it
    was (or, with --dry-run, would be) promoted; 3: the champion stays and the newest
    version is marked `challenger`; 1: nothing to compare.
    """
    from deblur.promote import promote as run

    promoted, account = run(kind, dry_run=dry_run)
    typer.echo(account)
    raise typer.Exit(0 if promoted else NOT_PROMOTED)


@app.command()
def verify(
    against: Annotated[
        str, typer.Option("--against", help="Git revision holding the published metrics.")
    ] = "HEAD",
    no_regression: Annotated[
        bool,
        typer.Option(
            "--no-regression",
            help="The merge gate: fail only when a model got worse than REV by more than "
            "the tolerance.",
        ),
    ] = False,
    readme: Annotated[Path, typer.Option(help="The README whose results table is checked.")] = Path(
        "README.md"
    ),
    params: ParamsOpt = None,
) -> None:
    """Compare metrics/eval.json and metrics/data.json with those at REV, the README's table
    and the docs/*.md tables marked `<!-- verify: eval.json -->`.

    Tolerances in params.yaml's verify section; timings (run-info/evaluate.json) are shown,
    never compared. Exit 0:
    all figures match; 1: a figure moved (each one named); 2: a metrics file or the
    README table is missing or malformed.
    """
    p = _params(params)
    from deblur import verify as check

    docs = check.docs_pages()
    rows = check.verify(p.verify, against, readme, regression_only=no_regression, docs=docs)
    typer.echo(check.text_table(rows, against))
    failed = check.failure(rows, against, p.verify)
    if failed:
        raise DeblurError(failed)
    typer.echo(f"verify: every figure matches {against} within tolerance")


@app.command()
def runs(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    limit: Annotated[int, typer.Option(min=1, help="Newest N pipeline runs.")] = 20,
    html: Annotated[
        bool,
        typer.Option(
            "--html",
            help="Write the Experiments page instead: the rows and their quality-against-"
            "speed chart, to --out (the report links to reports/runs.html).",
        ),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="With --html: the page's path (reports/runs.html)."),
    ] = None,
) -> None:
    """List the pipeline runs of the MLflow tracking store side by side, newest first.

    One row per `dvc repro` / `dvc exp run`: when, commit, DVC experiment, the params that
    differ between the rows, and per model test PSNR, SSIM, gain over the blurry input,
    ms per megapixel and the registry version (@champion marked).
    """
    from deblur import paths
    from deblur import runs as listed

    if html:
        page = out or paths.RUNS_HTML
        n = listed.write_page(page, limit)
        typer.echo(f"wrote {page} ({n} pipeline runs)")
        return
    typer.echo(listed.show(limit, as_json))


def main() -> None:
    """Console entry point: user mistakes end in one line and a non-zero exit, never a traceback."""
    from deblur import allocator

    if not sys.warnoptions:  # -W or PYTHONWARNINGS: the user asked to see them
        # Library warnings (MLflow, torch, pydantic...) are for their developers, not ours.
        warnings.filterwarnings("ignore")
        warnings.filterwarnings("default", module=r"deblur(\.|$)")
    allocator.tune()  # every command allocates big tensors (or serves a model that does)
    try:
        app()  # standalone: typer itself reports usage errors (exit 2) and --help
    except DeblurError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        _refused(exc)
        raise


def _refused(exc: Exception) -> None:
    """A login the tracking server refused (401/403), or a server that stopped answering
    after MLflow's own retries: its one line, not MLflow's traceback."""
    import os

    from deblur.tracking import access, runlog

    line = access.refusal(exc)
    mlflow_side = type(exc).__module__.split(".")[0] in ("mlflow", "requests", "urllib3")
    if line is None and mlflow_side and runlog.unreachable(exc):
        uri = os.environ.get("MLFLOW_TRACKING_URI", "the tracking server")
        line = (
            f"{uri} stopped answering ({str(exc).splitlines()[0][:160]}); start it and run "
            "the command again (a training stage continues from models/resume/)"
        )
    if line is not None:
        print(f"error: {line}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
