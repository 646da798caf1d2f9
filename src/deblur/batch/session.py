"""The SparkSession `deblur batch` runs in, with every setting the job depends on.

Each setting answers a trap met with pyspark 4.3, Java 17 and MLflow 3.17:

- Spark's base64() breaks lines every 76 characters by default
  (spark.sql.chunkBase64String.enabled), and the model's strict decoder refuses them.
- An Arrow batch holds up to 10,000 rows and 64 MiB, and overshoots by one row: a 20 MP
  photo is ~27 MB of base64 in and out, so a batch is kept to a few rows.
- The driver's environment does not reach the executors: what they need (threads, the
  tracking URI, PYTHONPATH, quiet warnings) goes through spark.executorEnv.*.
- Spark logs to the terminal; here log4j writes to a file, named when something fails.
- On a loopback master (local[N], spark://127.0.0.1:...) every socket binds 127.0.0.1 and
  the UI is off. Elsewhere the cluster's own settings apply (``conf`` adds to them).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from deblur.errors import DeblurError

LOOPBACK = "127.0.0.1"
# Rows per Arrow batch to and from the model: the memory a Python worker holds is about
# this many photos in base64 (in), decoded, deblurred and encoded (out).
ROWS_PER_BATCH = 2
# A cap in bytes as well, where Spark honours it (4.x): a batch is cut after the row that
# crosses it, so one 20 MP photo still goes through alone.
BYTES_PER_BATCH = 32 << 20
# A local[N] master gets task retries as a cluster has (local[N] alone never retries).
LOCAL_RETRIES = 4

_LOG4J = """\
rootLogger.level = warn
rootLogger.appenderRef.file.ref = file
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = %d{{yy/MM/dd HH:mm:ss}} %p %c{{1}}: %m%n%ex
"""


def is_loopback(master: str) -> bool:
    """local, local[N], local[N,F], local[*] or a standalone master on this machine."""
    if master.startswith("local"):
        return True
    found = re.match(r"spark://([^:/]+)", master)
    return found is not None and found[1] in (LOOPBACK, "localhost")


def with_retries(master: str) -> str:
    """local[N] -> local[N,4]: a killed Python worker is retried, as on a cluster."""
    found = re.fullmatch(r"local(?:\[(\d+|\*)\])?", master)
    if found is None:
        return master
    return f"local[{found[1] or 1},{LOCAL_RETRIES}]"


def threads_per_task(master: str) -> int:
    """Each task deblurs one photo at a time: the cores are shared out, not oversubscribed."""
    found = re.fullmatch(r"local\[(\d+)(?:,\d+)?\]", master)
    if found is not None:
        return max(1, (os.cpu_count() or 1) // int(found[1]))
    return 1


def log4j_config(folder: Path) -> tuple[Path, Path]:
    """A log4j2 file that sends Spark's logging to folder/spark.log -> (config, log)."""
    log = folder / "spark.log"
    config = folder / "log4j2.properties"
    config.write_text(_LOG4J.format(log=log))
    return config, log


def settings(master: str, log4j: Path, tracking_uri: str, extra: dict[str, str]) -> dict:
    """Every Spark setting of the job, before the user's own (``extra``)."""
    java = f"-Dlog4j2.configurationFile=file:{log4j}"
    threads = str(threads_per_task(master))
    conf = {
        "spark.master": with_retries(master),
        "spark.app.name": "deblur batch",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.extraJavaOptions": java,
        "spark.executor.extraJavaOptions": java,
        "spark.sql.chunkBase64String.enabled": "false",
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(ROWS_PER_BATCH),
        "spark.sql.execution.arrow.maxBytesPerBatch": str(BYTES_PER_BATCH),
        "spark.python.worker.reuse": "true",
        "spark.executorEnv.OMP_NUM_THREADS": threads,
        "spark.executorEnv.MKL_NUM_THREADS": threads,
        "spark.executorEnv.MLFLOW_TRACKING_URI": tracking_uri,
        "spark.executorEnv.PYTHONWARNINGS": "ignore",
        "spark.executorEnv.MLFLOW_LOGGING_LEVEL": "ERROR",
        "spark.executorEnv.GX_ANALYTICS_ENABLED": "false",
    }
    if is_loopback(master):
        conf |= {
            "spark.driver.host": LOOPBACK,
            "spark.driver.bindAddress": LOOPBACK,
            # The executors run this very interpreter and package (same machine).
            "spark.pyspark.python": sys.executable,
            "spark.pyspark.driver.python": sys.executable,
        }
        if os.environ.get("PYTHONPATH"):
            conf["spark.executorEnv.PYTHONPATH"] = os.environ["PYTHONPATH"]
    return conf | extra


def parse_conf(items: list[str]) -> dict[str, str]:
    """--conf KEY=VALUE options -> a dict; a malformed one is a one-line error."""
    conf = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DeblurError(f"--conf {item}: give KEY=VALUE, e.g. spark.executor.memory=4g")
        conf[key.strip()] = value
    return conf


def start(master: str, tracking_uri: str, extra: dict[str, str] | None = None):
    """A SparkSession for the job -> (session, Spark's log file)."""
    if not _java():
        raise DeblurError(
            "deblur batch needs a Java runtime (17 or newer) and found none; "
            "`make setup` installs Debian's openjdk-17-jre-headless, or set JAVA_HOME"
        )
    folder = Path(tempfile.mkdtemp(prefix="deblur-batch-"))
    config, log = log4j_config(folder)
    if is_loopback(master):
        os.environ["SPARK_LOCAL_IP"] = LOOPBACK  # the JVM reads it as it starts
        # PySpark takes the workers' interpreter from here, not from spark.pyspark.python.
        os.environ["PYSPARK_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    for key, value in settings(master, config, tracking_uri, extra or {}).items():
        builder = builder.config(key, value)
    try:
        with _stderr_to(log):
            spark = builder.getOrCreate()
    except Exception as exc:  # py4j and the JVM raise many kinds at start-up
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise DeblurError(f"Spark did not start on {master} ({reason}); see {log}") from None
    return spark, log


@contextmanager
def _stderr_to(log: Path) -> Iterator[None]:
    """The JVM (started here) and the Python workers it forks inherit this process's
    stderr: the java launcher's notes and the workers' tracebacks go to ``log``, not to
    the user's terminal. Only the JVM keeps the redirection; ours is put back."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(log, "ab") as f:
        os.dup2(f.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _java() -> bool:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return True
    from shutil import which

    return which("java") is not None
