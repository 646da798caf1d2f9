"""Every file the pipeline's stages write, named once; relative to the project root (DVC's cwd).

dvc.yaml declares the same paths as outs, metrics and plots;
tests/architecture/test_package_shape.py checks that the two agree, so a path is renamed
here and in dvc.yaml, nowhere else.

A DVC out holds what a stage computes, so the same code and params give the same bytes;
how long it took and which run logged it go to run-info/ (RUN_INFO), which no stage
declares and no stage's result depends on (`train --resume` reads back its seconds only):
git keeps it beside the metrics for the README's timings and `deblur verify`, and MLflow
has the same figures.
"""

from pathlib import Path

DATA = Path("data")
RAW = DATA / "raw"
MANIFEST = DATA / "manifest.csv"
PROCESSED = DATA / "processed"
MODELS = Path("models")
METRICS = Path("metrics")
PLOTS = Path("plots")
REPORTS = Path("reports")
FIGURES = REPORTS / "figures"
EXPECTATIONS = Path("pipeline") / "expectations"
TEMPLATES = Path("pipeline") / "templates"

DATA_JSON = METRICS / "data.json"  # validate: counts, sizes, blur statistics
EVAL_JSON = METRICS / "eval.json"  # evaluate: test scores per model
RESULTS_CSV = REPORTS / "results.csv"  # evaluate: the results table
PER_IMAGE_CSV = REPORTS / "per_image.csv"  # evaluate: every test image's scores
CURVE_CSV = PLOTS / "curve.csv"  # evaluate: test scores along training (quality vs compute)
REPORT_MD = REPORTS / "report.md"
REPORT_HTML = REPORTS / "report.html"
SAMPLES = REPORTS / "samples"  # evaluate: the images the report shows, models' outputs
SAMPLES_INDEX = SAMPLES / "index.json"  # evaluate: which test images, and why
RUNS_HTML = REPORTS / "runs.html"  # `deblur runs --html`, not a stage: the tracking store
BENCH_CSV = REPORTS / "bench.csv"  # `deblur bench`, not a stage
RUN_INFO = Path("run-info")  # per stage: timings, MLflow run ids, registry versions


# The files of SAMPLES: per sample a folder ("1", "2"...; SAMPLE_PHOTO for the real photo)
# holding SAMPLE_BLURRY, each model's output (named after its kind) and SAMPLE_SHARP.
SAMPLE_BLURRY, SAMPLE_SHARP, SAMPLE_PHOTO = "blurry", "sharp", "photo"


def sample_image(folder: str, name: str) -> Path:
    return SAMPLES / folder / f"{name}.png"


def run_info(stage: str) -> Path:
    """What varies between two runs of ``stage`` with the same inputs (not a DVC out)."""
    return RUN_INFO / f"{stage}.json"


def raw_dir(name: str) -> Path:
    return RAW / name


def checkpoint(kind: str) -> Path:
    return MODELS / f"{kind}.pt"


def train_state(kind: str) -> Path:
    """What `deblur train --resume` continues from: optimizer, scheduler, RNG, history.

    Kept out of the checkpoint so that loading a model for inference reads the weights
    alone: the optimizer state made models/*.pt 3x larger and its loading 5x slower.
    """
    return MODELS / f"{kind}.train.pt"


def train_metrics(kind: str) -> Path:
    """train-<kind>: the final training figures (a DVC metric)."""
    return METRICS / f"train_{kind}.json"


def train_plot(kind: str) -> Path:
    """train-<kind>: one row per epoch (a DVC plot)."""
    return PLOTS / f"train_{kind}.csv"


def curve_dir(kind: str) -> Path:
    """train-<kind>: the checkpoints kept part-way (train.<kind>.curve), for the curve."""
    return MODELS / "curve" / kind


def curve_checkpoint(kind: str, percent: int) -> Path:
    return curve_dir(kind) / f"{percent}.pt"


def resume_dir(kind: str) -> Path:
    """train-<kind>'s resume state (after SIGTERM, a lost tracking server or each epoch):
    not a DVC out, so the next `dvc repro`, which deletes the stage's outs, still finds it."""
    return MODELS / "resume" / kind
