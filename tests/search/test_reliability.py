"""Faults injected for real: crashes, a tracking server and a database that go away, out of
memory, an unwritable artifact store, hostile inputs, leaked secrets, reproducibility."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from optuna.trial import TrialState

from automl.errors import ConfigError
from automl.pipeline import run_search
from automl.search.settings import SearchSettings
from automl.search.space import parse_space
from tests.conftest import (
    TINY_SPACE,
    automl_command,
    bin_env,
    free_port,
    mlflow_client,
    scratch_database,
    search_settings,
    wait_for_http,
    wait_for_running_trial,
)

FAST_HEARTBEAT = {"AUTOML_HEARTBEAT_SECONDS": "1", "AUTOML_GRACE_SECONDS": "3"}


def tiny(tmp_path: Path, text: str = TINY_SPACE, **overrides) -> SearchSettings:
    return search_settings(tmp_path, text, **{"trials": 3, "study_name": "faults", **overrides})


def load(storage: str, name: str):
    import optuna

    from automl.stores import open_storage

    return optuna.load_study(study_name=name, storage=open_storage(storage))


# ---------------------------------------------------------------------------- crashes


@pytest.mark.hostile("stores")
@pytest.mark.slow
def test_kill_9_then_restart_loses_nothing_finished(tmp_path):
    space = tmp_path / "slow.yaml"
    space.write_text(TINY_SPACE.replace("epochs: 2", "epochs: 30").replace("[32, 64]", "16"))
    args = ["search", "--trials", "3", "--space", str(space), "--max-epochs", "30", "--device",
            "cpu", "--pruner", "none", "--no-evaluate", "--study-name", "crash"]  # fmt: skip
    env = bin_env(**FAST_HEARTBEAT)
    first = subprocess.Popen(automl_command(*args), cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    wait_for_running_trial(tmp_path / "automl.db", first)
    time.sleep(2)
    first.kill()  # SIGKILL: no handler runs, the trial stays RUNNING, its run open
    first.wait()
    time.sleep(4)  # past the grace period: the heartbeat has stopped
    args[args.index("--max-epochs") + 1] = "2"  # the rest, quickly
    rerun = subprocess.run(automl_command(*args), cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=600)  # fmt: skip
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "closed the parent run" in rerun.stdout
    storage = f"sqlite:///{tmp_path / 'automl.db'}"
    study = load(storage, "crash")
    crashed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(crashed) == 1 and crashed[0].user_attrs["reason"] == "crashed"
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 3  # the request is met: the crashed trial was run again
    client = mlflow_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_run(crashed[0].user_attrs["mlflow_run_id"]).info.status == "FAILED"
    parents = client.search_runs(
        [client.get_experiment_by_name("crash").experiment_id], "tags.kind = 'study'"
    )
    assert sorted(p.info.status for p in parents) == ["FAILED", "FINISHED"]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    finished_runs = [
        r for r in client.search_runs([client.get_experiment_by_name("crash").experiment_id],
                                      "attributes.status = 'FINISHED' and tags.state = 'COMPLETE'")
    ]  # fmt: skip
    assert len(finished_runs) == len(complete)
    for run in finished_runs:
        assert run.data.params and "val_acc" in run.data.metrics


# ---------------------------------------------------------------------------- services


def start_mlflow(port: int, backend: str, artifacts: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
         "--serve-artifacts", "--artifacts-destination", str(artifacts),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=bin_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"), stdout=log.open("a"),
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def wait_healthy(port: int, limit: float = 120) -> None:
    wait_for_http(f"http://127.0.0.1:{port}/health", limit=limit)


@pytest.mark.hostile("stores")
@pytest.mark.slow
def test_tracking_server_away_mid_study_is_ridden_out(tmp_path):
    port = free_port()
    backend = f"sqlite:///{tmp_path / 'server.db'}"
    log = tmp_path / "server.log"
    server = start_mlflow(port, backend, tmp_path / "served", log)
    wait_healthy(port)
    space = tmp_path / "space.yaml"
    space.write_text(TINY_SPACE.replace("epochs: 2", "epochs: 6").replace("[32, 64]", "16"))
    search = subprocess.Popen(
        automl_command("search", "--trials", "4", "--space", str(space), "--max-epochs", "6",
                       "--device", "cpu", "--no-evaluate", "--study-name", "away",
                       "--tracking-uri", f"http://127.0.0.1:{port}"),
        cwd=tmp_path, env=bin_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip  # MLflow's own HTTP retries as automl sets them: the outage must be said
    wait_for_running_trial(tmp_path / "automl.db", search)
    os.killpg(server.pid, signal.SIGKILL)  # the server goes away mid-trial
    server.wait()
    time.sleep(8)
    server = start_mlflow(port, backend, tmp_path / "served", log)  # and comes back
    try:
        out, _ = search.communicate(timeout=600)
        assert search.returncode == 0, out
        server_name = f"the MLflow tracking server http://127.0.0.1:{port}"
        assert f"{server_name} stopped answering at" in out, out
        # A call that must wait says so while it waits; a checkpoint is not waited for
        # (the trial trains on without it). Which one meets the outage is a matter of timing.
        waited = f"{server_name} unreachable (away" in out and "retrying in" in out
        assert waited or "its checkpoint at epoch" in out, out
        assert f"{server_name} answers again after" in out, out
        assert "sending what was held meanwhile:" in out, out
        study = load(f"sqlite:///{tmp_path / 'automl.db'}", "away")
        assert len(study.trials) == 4
        assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
        client = mlflow_client(f"http://127.0.0.1:{port}")
        for trial in study.trials:  # every result delivered once the server was back
            run = client.get_run(trial.user_attrs["mlflow_run_id"])
            assert run.info.status in ("FINISHED", "KILLED")
            assert "val_acc" in run.data.metrics
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait()


def running_trials(storage: str, name: str) -> list:
    try:
        return [t for t in load(storage, name).trials if t.state == TrialState.RUNNING]
    except Exception:  # the study does not exist yet
        return []


class Proxy:
    """A TCP relay to PostgreSQL that can be cut and restored: the database going away."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.port, self.target = port, target
        self.sockets: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self.lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        assert self.listener is not None
        self.listener.close()
        with self.lock:
            for s in self.sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass
            self.sockets = []


@pytest.mark.hostile("stores")
@pytest.mark.slow
@pytest.mark.postgres
def test_database_away_mid_study_is_ridden_out(tmp_path):
    with scratch_database("proxy") as database:
        _ride_out_a_database_away(tmp_path, database)


def _ride_out_a_database_away(tmp_path: Path, database: str) -> None:
    proxy = Proxy(free_port(), ("127.0.0.1", 5432))
    proxy.start()
    storage = f"postgresql+psycopg2://postgres@127.0.0.1:{proxy.port}/{database}"
    space = tmp_path / "space.yaml"
    space.write_text(TINY_SPACE.replace("epochs: 2", "epochs: 6").replace("[32, 64]", "16"))
    search = subprocess.Popen(
        automl_command("search", "--trials", "4", "--space", str(space), "--max-epochs", "6",
                       "--device", "cpu", "--no-evaluate", "--study-name", "db-away",
                       "--storage", storage),
        cwd=tmp_path, env=bin_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    direct = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{database}"
    try:
        deadline = time.monotonic() + 120
        while not running_trials(direct, "db-away"):  # wait for a trial to run
            assert time.monotonic() < deadline and search.poll() is None
            time.sleep(0.5)
        proxy.cut()  # the database goes away mid-trial
        time.sleep(6)
        proxy.start()  # and comes back
        out, _ = search.communicate(timeout=600)
        assert search.returncode == 0, out
        assert "the Optuna storage stopped answering at" in out, out
        assert "the Optuna storage unreachable (away" in out
        assert "the Optuna storage answers again after" in out, out
        study = load(direct, "db-away")
        assert len(study.trials) == 4
        assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    finally:
        search.kill()
        proxy.cut()


@pytest.mark.hostile("stores")
def test_unreachable_stores_at_start_are_one_line(tmp_path, capsys, monkeypatch, tiny_space_file):
    from automl.cli import main

    monkeypatch.chdir(tmp_path)
    start = time.monotonic()
    code = main(
        [
            "search",
            "--space",
            str(tiny_space_file),
            "--tracking-uri",
            f"http://127.0.0.1:{free_port()}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "the MLflow tracking server does not answer" in err
    assert len(err.strip().splitlines()) == 1
    assert time.monotonic() - start < 60


# ---------------------------------------------------------------------------- resources


@pytest.mark.slow
def test_out_of_memory_prunes_the_trial_and_the_study_goes_on(tmp_path):
    """A network whose first activation needs ~60 GB in one block: the allocation is refused
    at once (larger than the machine), never slowly filled. Weights stay small. (A block
    that fits the kernel's overcommit but not the memory would bring the OOM killer to
    the whole search instead, so the images are 126 px: the stem halves them to 63.)"""
    import numpy as np
    from PIL import Image

    root = tmp_path / "big"
    rng = np.random.default_rng(0)
    for label, shade in (("dark", 40), ("light", 200)):
        (root / label).mkdir(parents=True)
        for i in range(700):  # distinct images: duplicates would be dropped
            pixels = np.clip(rng.normal(shade, 30, (126, 126)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    huge = (  # four stages after a 2x2 stem: 63x63 maps of 4096 channels
        "architecture: {stages: 4, per_stage: {width: [4096, 8], convs: 1}, kernel_size: 3}\n"
        "training: {epochs: 1, batch_size: 1024}\n"
        "baseline: {arch.stage1.width: 4096, arch.stage2.width: 8, arch.stage3.width: 8,"
        " arch.stage4.width: 8}\n"
    )
    config = tiny(
        tmp_path, huge, trials=1, dataset=f"imagefolder:{root}", data_dir=tmp_path / "data"
    )
    outcome = run_search(config)
    (trial,) = outcome.study.trials
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs["reason"] == "oom"
    assert "can't allocate memory" in trial.user_attrs["message"]
    assert "batch size 1024" in trial.user_attrs["message"]
    client = mlflow_client(config.tracking_uri)
    run = client.get_run(trial.user_attrs["mlflow_run_id"])
    assert run.data.tags["reason"] == "oom" and run.data.params["arch.stage1.width"] == "4096"
    # The same study goes on, in the same space (it may not change); --max-params keeps
    # every wide network out before it allocates anything.
    again = tiny(tmp_path, huge, trials=1, dataset=f"imagefolder:{root}",
                 data_dir=tmp_path / "data", max_params=50_000)  # fmt: skip
    outcome = run_search(again)
    assert len(outcome.study.trials) == 2
    assert outcome.study.trials[-1].state in (TrialState.COMPLETE, TrialState.PRUNED)


def chattr(path: Path, flag: str) -> bool:
    return (
        shutil.which("chattr") is not None
        and subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode == 0
    )


@pytest.mark.hostile("stores")
@pytest.mark.slow
def test_an_unwritable_artifact_store_fails_the_trial_not_the_study(tmp_path):
    from automl.search.hooks import Hooks

    config = tiny(tmp_path, trials=2)
    frozen: list[Path] = []

    def begin(number, params):
        folder = tmp_path / "mlartifacts" / "faults"
        if number == 0 and chattr(folder, "+i"):  # even root cannot write there now
            frozen.append(folder)

    def end(study, trial):
        for folder in frozen:
            chattr(folder, "-i")

    outcome = run_search(config, hooks=Hooks(on_trial_begin=begin, on_trial_end=end))
    if not frozen:
        pytest.skip("chattr +i is not available on this filesystem")
    first, second = outcome.study.trials
    assert first.state == TrialState.FAIL and first.user_attrs["reason"] == "artifacts"
    assert "saving the weights failed" in first.user_attrs["message"]
    assert second.state in (TrialState.COMPLETE, TrialState.PRUNED)


# ---------------------------------------------------------------------------- hostile input


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats(allow_nan=True)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=25,
)  # fmt: skip
KEYS = [
    "architecture", "augmentation", "optimizer", "training", "baseline", "per_stage",
    "stages", "width", "type", "low", "high", "choices", "value", "when", "log", "lr",
]  # fmt: skip
space_like = st.dictionaries(
    st.sampled_from(KEYS) | st.text(max_size=8),
    st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), yaml_values, max_size=5)
    | yaml_values,
    max_size=5,
)


@pytest.mark.hostile("inputs")
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(space_like)
def test_fuzzed_spaces_load_or_fail_with_one_line(data):
    text = yaml.safe_dump(data, allow_unicode=True)
    check_space_text(text)


@pytest.mark.hostile("inputs")
@settings(max_examples=400, deadline=None)
@given(st.text(max_size=400))
def test_fuzzed_text_loads_or_fails_with_one_line(text):
    check_space_text(text)


@pytest.mark.hostile("security")
@pytest.mark.parametrize(
    "text",
    [
        "training: !!python/object/apply:os.system ['touch pwned']\n",
        "!!python/name:os.system\n",
        "a: &a [*a]\n",
        "[" * 5000 + "]" * 5000,
        "training: {epochs: {type: int, low: 1, high: 1" + "0" * 400 + "}}\n",
        "architecture: {per_stage: {width: {type: int, low: 1, high: 99999999999999999999}}}\n",
    ],
)
def test_yaml_tags_and_bombs_never_run_code(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check_space_text(text)
    assert not (tmp_path / "pwned").exists()


def check_space_text(text: str) -> None:
    try:
        space = parse_space(text, "fuzz.yaml")
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith("fuzz.yaml") and "\n" not in message
        return
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    from automl.training.config import TrialConfig

    TrialConfig.from_params(space.sample(trial))  # a valid space gives a valid configuration


@pytest.mark.hostile("data")
def test_images_too_large_and_links_outside_are_dropped(tmp_path):
    from PIL import Image

    from automl.data import load_dataset
    from tests.serving.test_serving import png_claiming_size

    root = tmp_path / "images"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (8, 8), color=i * 40 + (label == "b") * 100).save(
                root / label / f"{i}.png"
            )
    (root / "a" / "bomb.png").write_bytes(png_claiming_size(20_000, 20_000))  # Pillow refuses
    (root / "a" / "big.png").write_bytes(png_claiming_size(10_000, 5_000))  # our limit refuses
    secret = tmp_path / "outside.png"
    Image.new("L", (8, 8), color=7).save(secret)
    (root / "b" / "escape.png").symlink_to(secret)
    (root / "b" / "up").symlink_to(tmp_path, target_is_directory=True)
    report = load_dataset(f"imagefolder:{root}", tmp_path / "cache").report
    assert report.kept == 6
    assert report.dropped["too large"] == [
        "a/big.png (10000x5000 pixels)",
        "a/bomb.png (over Pillow's decompression-bomb limit)",
    ]
    assert report.dropped["outside the folder"] == ["b/escape.png (a link to a file elsewhere)"]


# ---------------------------------------------------------------------------- secrets


@pytest.mark.hostile("security")
@pytest.mark.slow
@pytest.mark.postgres
def test_passwords_never_reach_logs_params_tags_or_the_terminal(tmp_path):
    with scratch_database("secret") as database:
        _search_with_a_password(tmp_path, database)


def _search_with_a_password(tmp_path: Path, database: str) -> None:
    password = "hunter2-very-secret"  # trust authentication accepts it and ignores it
    # In the query string (the userinfo form is masked the same way: test_stores.py).
    storage = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{database}?password={password}"
    space = tmp_path / "space.yaml"
    space.write_text(TINY_SPACE)
    result = subprocess.run(
        automl_command("search", "--trials", "2", "--space", str(space), "--max-epochs", "1",
                       "--device", "cpu", "--storage", storage, "--study-name", "secret"),
        cwd=tmp_path, env=bin_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert password not in result.stdout + result.stderr
    client = mlflow_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("secret")
    for run in client.search_runs([experiment.experiment_id]):
        assert password not in json.dumps([run.data.params, run.data.tags])
    (parent,) = client.search_runs([experiment.experiment_id], "tags.kind = 'study'")
    assert "***" in parent.data.params["storage"]
    config = Path(
        client.download_artifacts(parent.info.run_id, "resolved_config.json", str(tmp_path))
    )
    assert password not in config.read_text()
    study = load(storage, "secret")
    assert password not in json.dumps(study.user_attrs)


# ---------------------------------------------------------------------------- reproducibility


@pytest.mark.slow
def test_same_seed_same_params_and_metrics_and_a_recorded_configuration(tmp_path):
    outcomes = []
    for name in ("one", "two"):
        folder = tmp_path / name
        folder.mkdir()
        outcomes.append(run_search(tiny(folder, trials=4, seed=7, deterministic=True)))
    first, second = ([t for t in o.study.trials] for o in outcomes)
    assert [t.params for t in first] == [t.params for t in second]
    assert [t.intermediate_values for t in first] == [t.intermediate_values for t in second]
    client = mlflow_client(f"sqlite:///{tmp_path / 'one' / 'mlflow.db'}")
    parent = client.get_run(outcomes[0].parent_run_id)
    assert parent.data.tags["version.torch"] and parent.data.tags["seed"] == "7"
    path = client.download_artifacts(parent.info.run_id, "resolved_config.json", str(tmp_path))
    config = json.loads(Path(path).read_text())
    assert config["seed"] == 7 and config["deterministic"] is True
    assert config["versions"]["optuna"] and "data_digest" in config
