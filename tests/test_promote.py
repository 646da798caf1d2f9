"""Champion promotion rules, against a real MLflow registry in a temporary SQLite store."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from deblur.errors import DeblurError
from deblur.promote import promote
from deblur.tracking import registry, store


@pytest.fixture
def versions(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = store.client()
    client.create_registered_model("deblur-gan")

    def add(psnr: float | None, ssim: float | None = 0.8) -> str:
        mv = client.create_model_version("deblur-gan", source=str(tmp_path))
        if psnr is not None:
            registry.tag_version("gan", mv.version, {"test_psnr": psnr, "test_ssim": ssim})
        return mv.version

    return client, add


def champion(client) -> str:
    return client.get_model_version_by_alias("deblur-gan", "champion").version


def test_first_version_becomes_champion(versions):
    client, add = versions
    v1 = add(25.0)
    promoted, account = promote("gan")
    assert promoted and champion(client) == v1
    assert "no current champion" in account


def test_better_version_takes_over(versions):
    client, add = versions
    add(25.0)
    promote("gan")
    v2 = add(25.5)
    promoted, _ = promote("gan")
    assert promoted and champion(client) == v2


def test_worse_version_becomes_challenger(versions):
    client, add = versions
    v1 = add(25.0)
    promote("gan")
    v2 = add(24.0)
    promoted, account = promote("gan")
    assert not promoted and champion(client) == v1
    assert client.get_model_version_by_alias("deblur-gan", "challenger").version == v2
    assert "challenger" in account


def test_tie_is_broken_by_ssim_and_a_full_tie_keeps_the_champion(versions):
    client, add = versions
    add(25.0, 0.80)
    promote("gan")
    v2 = add(25.0, 0.81)
    assert promote("gan")[0] and champion(client) == v2
    add(25.0, 0.81)
    assert not promote("gan")[0] and champion(client) == v2


def test_dry_run_changes_nothing(versions):
    client, add = versions
    v1 = add(25.0)
    promote("gan")
    add(26.0)
    promoted, account = promote("gan", dry_run=True)
    assert promoted and "would move" in account
    assert champion(client) == v1


def test_unscored_version_is_refused(versions):
    _, add = versions
    add(None)
    with pytest.raises(DeblurError, match="deblur evaluate"):
        promote("gan")


def test_cli_exit_codes(versions, tmp_path):
    _, add = versions
    add(25.0)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "deblur", "promote", *a], capture_output=True, text=True, env=env
    )
    first = run("gan")
    assert first.returncode == 0 and "moved @champion" in first.stdout
    again = run("gan")
    assert again.returncode == 3 and "already holds" in again.stdout
    unknown = run("vae")
    assert unknown.returncode == 1 and "unknown model 'vae'" in unknown.stderr
    assert "Traceback" not in unknown.stderr


def test_experiment_copies_record_in_the_workspace_store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    copy = tmp_path / ".dvc" / "tmp" / "exps" / "tmpabc123"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    assert store.tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"


def test_a_promotion_raced_by_a_better_one_refuses_instead_of_overwriting(versions):
    """The read and the move pulled apart: meanwhile a better version is registered and
    promoted by a second promotion. The first must not put its worse version back."""
    client, add = versions
    add(25.0)
    promote("gan")
    v2 = add(25.5)
    raced = {}

    def rival():  # runs after the first promotion compared v2 with v1, before its move
        raced["v3"] = add(26.0)
        raced["second"] = promote("gan")

    with pytest.raises(DeblurError, match=rf"moved from v1 to v{3}.*v{v2}.*run `deblur promote"):
        promote("gan", compared=rival)
    assert raced["second"][0] and champion(client) == raced["v3"]


def test_two_promotions_at_once_agree(versions):
    """Both compare the same newest version, then move together: one moves, the other
    finds its own version there and does not fail."""
    import threading

    client, add = versions
    add(25.0)
    promote("gan")
    v2 = add(25.5)
    both = threading.Barrier(2)
    results, errors = [], []

    def one():
        try:
            results.append(promote("gan", compared=lambda: both.wait(10)))
        except DeblurError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and [r[0] for r in results] == [True, True]
    assert champion(client) == v2


def test_a_challenger_taking_champion_gives_up_challenger(versions):
    client, add = versions
    add(25.0)
    promote("gan")
    v2 = add(24.0)
    promote("gan")
    assert client.get_model_version_by_alias("deblur-gan", "challenger").version == v2
    registry.tag_version("gan", v2, {"test_psnr": 26.0, "test_ssim": 0.8})  # re-evaluated
    assert promote("gan")[0] and champion(client) == v2
    assert client.get_registered_model("deblur-gan").aliases == {"champion": v2}
