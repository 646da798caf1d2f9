"""A Spark standalone master and worker on 127.0.0.1: for trying `deblur batch
--master spark://...` on one machine, for the tests and for `deblur bench --batch`.

The pip wheel of pyspark has no sbin/start-master.sh: the daemons are started with its
bin/spark-class. Both bind 127.0.0.1 (SPARK_LOCAL_IP, --host), pick free ports, keep
their web UIs on loopback too, and the master's REST port (6066 by default) is off.
`python -m deblur.batch.cluster` (`make spark-cluster`) runs one until Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from deblur.errors import DeblurError

LOOPBACK = "127.0.0.1"
MASTER = "org.apache.spark.deploy.master.Master"
WORKER = "org.apache.spark.deploy.worker.Worker"
# Any standalone daemon start (master or a registered worker) takes a few seconds.
START_TIMEOUT_S = 90


def spark_class() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent / "bin" / "spark-class"


def daemon_env() -> dict[str, str]:
    import pyspark

    env = dict(os.environ)
    env["SPARK_HOME"] = str(Path(pyspark.__file__).parent)
    env["SPARK_LOCAL_IP"] = LOOPBACK
    env["SPARK_DAEMON_JAVA_OPTS"] = "-Dspark.master.rest.enabled=false"
    env["PYSPARK_PYTHON"] = sys.executable  # what the worker's executors run the UDFs with
    return env


@dataclass
class Cluster:
    url: str  # spark://127.0.0.1:PORT
    folder: Path  # logs and the worker's work dir
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def worker_pid(self, name: str = "worker") -> int:
        return self.procs[name].pid

    def add_worker(self, name: str, cores: int, memory: str) -> subprocess.Popen:
        log = self.folder / f"{name}.log"
        cmd = [str(spark_class()), WORKER, "--host", LOOPBACK, "--port", "0"]
        cmd += ["--webui-port", "0", "--cores", str(cores), "--memory", memory]
        cmd += ["--work-dir", str(self.folder / f"{name}-work"), self.url]
        proc = _spawn(cmd, log)
        self.procs[name] = proc
        _wait_for(proc, log, r"Successfully registered with master", name)
        return proc

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            _stop(proc)
        self.procs.clear()


def _spawn(cmd: list[str], log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        # Its own process group: the JVM's children (executors, Python workers) end with it.
        return subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=daemon_env(), start_new_session=True
        )


def _wait_for(proc: subprocess.Popen, log: Path, pattern: str, what: str) -> re.Match:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        found = re.search(pattern, log.read_text(errors="replace"))
        if found:
            return found
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-800:]
            raise DeblurError(f"the Spark {what} exited with {proc.returncode}: {tail}")
        time.sleep(0.3)
    raise DeblurError(f"the Spark {what} did not start within {START_TIMEOUT_S} s; see {log}")


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the daemon's own group, SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    except ProcessLookupError:
        pass


def start(
    folder: str | os.PathLike | None = None, cores: int = 2, memory: str = "4g", workers: int = 1
) -> Cluster:
    """A master and ``workers`` workers on loopback, each with ``cores`` and ``memory``."""
    folder = Path(folder or tempfile.mkdtemp(prefix="deblur-spark-"))
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "master.log"
    cmd = [str(spark_class()), MASTER, "--host", LOOPBACK, "--port", "0", "--webui-port", "0"]
    master = _spawn(cmd, log)
    cluster = Cluster("", folder, {"master": master})
    try:
        found = _wait_for(master, log, r"Starting Spark master at (spark://\S+:\d+)", "master")
        cluster.url = found[1]
        for i in range(workers):
            cluster.add_worker("worker" if i == 0 else f"worker{i + 1}", cores, memory)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--memory", default="4g", help="the worker's memory for executors")
    parser.add_argument("--dir", default=None, help="logs and work dir (default: a temp dir)")
    args = parser.parse_args(argv)
    try:
        cluster = start(args.dir, args.cores, args.memory)
    except DeblurError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    print(
        f"Spark standalone master at {cluster.url}, one worker ({args.cores} cores, "
        f"{args.memory}); logs in {cluster.folder}"
    )
    print(f"  deblur batch PHOTOS -o OUT --master {cluster.url}")
    print("Ctrl-C stops both.")
    try:
        while all(p.poll() is None for p in cluster.procs.values()):
            time.sleep(1)
        print("error: a Spark daemon exited; see its log", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
