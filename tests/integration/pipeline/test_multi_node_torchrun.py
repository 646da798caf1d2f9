"""Training across machines, for real: two torchrun agents on 127.0.0.1 (static rendezvous,
as docs/scale-out.md shows), each in its own copy of the workspace, against a tracking
server. Node-rank 0 alone writes; the run records the world; --resume needs the state on
node 0 only; a missing node and a failing node end both agents, each with one line."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest
import yaml
from support.servers import free_port
from support.team_procs import Watched
from support.team_servers import mlflow_server

from deblur.train import distributed

pytestmark = pytest.mark.slow
TORCHRUN = Path(sys.executable).with_name("torchrun")
RDZV_TIMEOUT = 20  # seconds a node waits for the others (docs/scale-out.md: --rdzv-conf)


def _copy(prepared: Path, root: Path, raw: dict) -> Path:
    shutil.copytree(prepared, root)
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    return root


def _agent(
    root: Path, rank: int, port: int, url: str, *extra: str, launcher: str = "torchrun"
) -> Watched:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    env |= {"MLFLOW_TRACKING_URI": url, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    start = [str(TORCHRUN)] if launcher == "torchrun" else [sys.executable, "-m", launcher]
    cmd = [*start, "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(rank)]
    cmd += ["--master-addr", "127.0.0.1", "--master-port", str(port)]
    cmd += ["--rdzv-conf", f"timeout={RDZV_TIMEOUT}"]
    cmd += ["-m", "deblur", "train", "ae", "--device", "cpu", *extra]
    return Watched(cmd, cwd=root, env=env)


@pytest.fixture
def server(tmp_path):
    with mlflow_server(tmp_path / "server", f"sqlite:///{tmp_path / 'server' / 's.db'}") as url:
        yield url


def test_two_agents_one_writer_world_recorded_resume_from_node_0(
    prepared, smoke_params, tmp_path, server
):
    from mlflow import MlflowClient

    a = _copy(prepared, tmp_path / "node0", smoke_params(epochs=1))
    b = _copy(prepared, tmp_path / "node1", smoke_params(epochs=1))
    port = free_port()
    agents = [_agent(a, 0, port, server), _agent(b, 1, port, server)]
    for agent in agents:
        assert agent.wait(timeout=600) == 0, agent.tail
    assert (a / "models" / "ae.pt").is_file() and (a / "metrics" / "train_ae.json").is_file()
    assert not (b / "models" / "ae.pt").exists(), "node-rank 1 wrote a DVC out"
    assert not (b / "metrics" / "train_ae.json").exists()
    summary = yaml.safe_load((a / "metrics" / "train_ae.json").read_text())
    info = yaml.safe_load((a / "run-info" / "train-ae.json").read_text())
    assert summary["world_size"] == 2 and info["registered_version"] == 1

    client = MlflowClient(server, server)
    run = client.get_run(info["mlflow_run_id"])
    assert run.data.tags["world.size"] == "2" and run.data.tags["world.nodes"] == "2"
    assert len(client.search_model_versions("name='deblur-ae'")) == 1, "one registered version"

    # --resume with the state on node 0 alone: it is broadcast.
    for root in (a, b):
        (root / "params.yaml").write_text(yaml.safe_dump(smoke_params(epochs=2)))
    port = free_port()
    agents = [_agent(a, 0, port, server, "--resume"), _agent(b, 1, port, server, "--resume")]
    for agent in agents:
        assert agent.wait(timeout=600) == 0, agent.tail
    resumed = yaml.safe_load((a / "metrics" / "train_ae.json").read_text())
    assert resumed["epochs"] == 2 and resumed["steps"] == 2 * summary["steps"]
    assert not (b / "models").exists() or not (b / "models" / "ae.pt").exists()


@pytest.mark.parametrize("launcher", ["torchrun", "deblur.launch"])
def test_a_node_that_never_joins_fails_within_a_minute(prepared, smoke_params, tmp_path, launcher):
    a = _copy(prepared, tmp_path / "node0", smoke_params(epochs=1))
    started = time.monotonic()
    alone = _agent(a, 0, free_port(), "http://127.0.0.1:9", launcher=launcher)
    code = alone.wait(timeout=120)
    assert code != 0 and time.monotonic() - started < 60, alone.tail
    if launcher == "deblur.launch":  # torchrun itself prints its traceback
        assert alone.lines and len(alone.errors()) == 1 and "Traceback" not in alone.out
        assert "did not meet" in alone.errors()[0] and "timeout" in alone.errors()[0]


def test_a_failure_on_either_node_ends_both(prepared, smoke_params, tmp_path, server):
    a = _copy(prepared, tmp_path / "node0", smoke_params(epochs=1))
    b = _copy(prepared, tmp_path / "node1", smoke_params(epochs=1))
    shutil.rmtree(b / "data" / "processed")  # node 1 has no data: a clean error there
    port = free_port()
    agents = [_agent(a, 0, port, server), _agent(b, 1, port, server)]
    codes = [agent.wait(timeout=300) for agent in agents]
    assert all(code != 0 for code in codes), [agent.tail for agent in agents]
    for agent in agents:
        assert "Traceback" not in agent.out, agent.tail
        assert len(agent.errors()) == 1, agent.tail
    assert "data/processed" in agents[1].errors()[0]
    assert "lost its peers" in agents[0].errors()[0]


def test_threads_come_from_the_node_own_process_count():
    cores = os.cpu_count() or 1
    assert distributed.threads_per_process(1) == cores
    assert distributed.threads_per_process(2) == max(1, cores // 2)
    assert distributed.World(0, 16, None, True, local_size=8).nodes == 2
