"""Resuming a study: only on the data it was searched on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from automl.errors import ConfigError
from automl.pipeline import run_search
from tests.conftest import mlflow_client, search_settings

pytestmark = pytest.mark.slow


def photos(root: Path, per_class: int, start: int = 0) -> None:
    """Two classes of distinct 8x8 grey images (duplicates would be dropped)."""
    rng = np.random.default_rng(start)
    for label, shade in (("dark", 60), ("light", 190)):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(start, start + per_class):
            pixels = np.clip(rng.normal(shade, 40, (8, 8)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")


def test_a_study_resumes_only_on_the_data_it_was_searched_on(tmp_path):
    root = tmp_path / "photos"
    photos(root, 30)
    settings = search_settings(
        tmp_path, trials=1, study_name="grown", dataset=f"imagefolder:{root}",
        data_dir=tmp_path / "data", max_epochs=1,
    )  # fmt: skip
    first = run_search(settings)
    client = mlflow_client(settings.tracking_uri)
    runs = len(client.search_runs([e.experiment_id for e in client.search_experiments()]))

    photos(root, 10, start=30)  # the folder grew: other splits, other validation images
    with pytest.raises(ConfigError, match=r"^--dataset: study 'grown' was searched on other data"):
        run_search(settings)
    bigger = search_settings(
        tmp_path, trials=1, study_name="grown", dataset=f"imagefolder:{root}",
        data_dir=tmp_path / "data", max_epochs=1, image_size=12,
    )  # fmt: skip
    with pytest.raises(ConfigError, match="other files, folder or --image-size"):
        run_search(bigger)
    # Nothing was written for the refused searches: no trial, no run.
    assert len(first.study.trials) == 1
    assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == runs

    renamed = search_settings(
        tmp_path, trials=1, study_name="grown-2", dataset=f"imagefolder:{root}",
        data_dir=tmp_path / "data", max_epochs=1,
    )  # fmt: skip
    assert len(run_search(renamed).study.trials) == 1  # a new study on the new data runs


def test_a_search_starting_while_another_concludes_leaves_its_parent_run_open(tmp_path):
    """The parent run of a search that is registering or evaluating (no trial running) is
    not abandoned: it is closed as such only once that search's heartbeat has stopped."""
    from automl.search.hooks import Hooks
    from automl.search.scheduler import owners
    from automl.search.scheduler.heartbeats import keep_search_alive
    from automl.search.scheduler.session import prepare

    settings = search_settings(tmp_path, trials=1, study_name="live", max_epochs=1)
    run_search(settings)  # the study has a finished trial, none running
    client = mlflow_client(settings.tracking_uri)
    concluding = prepare(settings, Hooks())  # a search between its trials and its end
    parent = concluding.parent_run_id
    with keep_search_alive(concluding.study, owners.Owner(parent)):
        second = prepare(settings, Hooks())  # a second search starts meanwhile
        assert client.get_run(parent).info.status == "RUNNING"
    # The second one dies before it ever beats: the next search closes its parent run.
    notes: list[str] = []
    prepare(settings, Hooks(on_note=notes.append))
    assert client.get_run(second.parent_run_id).info.status == "FAILED"
    assert any(second.parent_run_id in note for note in notes), notes
