"""`pai dataset`, `pai model` and `pai lineage` against real auth, scheduler, lineage and dlc processes:
register data, train on it with `pai job submit --dataset --output-model`, find the model and its lineage."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from .conftest import AuthProcess, DlcProcess, LineageProcess, Pai, SchedulerProcess
from .test_jobs import make_room

# reads the registered data from $PAI_DATA_DIR, reports a loss, writes its "model"
TRAIN = (
    "import json, os, pathlib; "
    "rows = (pathlib.Path(os.environ['PAI_DATA_DIR']) / 'rows.txt').read_text().split(); "
    "print(f'read {len(rows)} rows'); "
    "print('@pai.metric ' + json.dumps({'step': 1, 'loss': 1.0 / len(rows)})); "
    "out = pathlib.Path(os.environ['PAI_OUTPUT_DIR']); out.mkdir(parents=True, exist_ok=True); "
    "(out / 'model.txt').write_text('weights')"
)


@pytest.fixture(scope="module")
def dlc_lineage(lineage: LineageProcess) -> LineageProcess:
    return lineage


@pytest.fixture(scope="module")
def room(auth: AuthProcess, scheduler: SchedulerProcess) -> None:
    make_room(scheduler, auth.admin_key, "lab")


def data(tmp_path: Path, name: str, rows: int) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "rows.txt").write_text(" ".join(str(i) for i in range(rows)))
    return d


def test_register_data_train_on_it_and_find_the_model(
    admin: Pai, room: None, lineage: LineageProcess, dlc: DlcProcess, tmp_path: Path
) -> None:
    admin.ok("workspace", "create", "lab")
    at = ("--endpoint", lineage.address, "-w", "lab")
    created = admin.ok(
        "dataset", "create", "digits", *at, "--uri", str(data(tmp_path, "v1", 3)), "--output", "json"
    )
    assert json.loads(created.out)["latestVersion"] == "workspaces/lab/datasets/digits/versions/1"
    added = admin.ok("dataset", "add-version", "digits", *at, "--uri", str(data(tmp_path, "v2", 5)))
    assert "2" in added.out and "ACTIVE" in added.out
    versions = json.loads(admin.ok("dataset", "versions", "digits", *at, "--output", "json").out)
    assert [(v["name"].rsplit("/", 1)[1], v["fileCount"]) for v in versions] == [("2", "1"), ("1", "1")]
    assert [d["name"] for d in json.loads(admin.ok("dataset", "list", *at, "--output", "json").out)] == [
        "workspaces/lab/datasets/digits"
    ]
    again = admin("dataset", "create", "digits", *at, "--uri", str(tmp_path / "v1"))
    assert again.code == 1 and "DATASET_ALREADY_EXISTS" in again.err

    job_at = ("--endpoint", dlc.address, "-w", "lab")
    done = admin(
        "job", "submit", "train", *job_at, "--command", f"{sys.executable} -c \"{TRAIN}\"",
        "--dataset", "digits:1", "--output-model", "net", "--hp", "lr=0.1", "--wait",
    )  # fmt: skip
    assert done.code == 0 and "SUCCEEDED" in done.out, done.out + done.err
    assert "read 3 rows" in admin.ok("job", "logs", "train", *job_at).out  # version 1, not the latest
    missing = admin("job", "submit", "nodata", *job_at, "--command", "true", "--dataset", "nothing")
    assert missing.code == 1 and "DATASET_VERSION_NOT_FOUND" in missing.err

    for _ in range(100):  # lineage registers the model from dlc's event
        got = json.loads(admin.ok("job", "get", "train", *job_at, "--output", "json").out)
        if got.get("outputModelVersion"):
            break
        time.sleep(0.1)
    assert got["outputModelVersion"] == "workspaces/lab/models/net/versions/1"
    model = json.loads(admin.ok("model", "get", "net", *at, "--output", "json").out)
    assert model["versionCount"] == 1 and model["framework"] == "PYTORCH"
    table = admin.ok("model", "versions", "net", *at).out
    assert "train" in table and "loss=0.3333" in table
    shown = admin.ok("lineage", "show", "model", "net", *at).out
    assert "PRODUCED: train" in shown and "CONSUMED_BY: digits:1" in shown
    mermaid = admin.ok(
        "lineage", "show", "dataset", "digits:1", *at, "--direction", "down", "--format", "mermaid"
    )
    assert mermaid.out.startswith("flowchart")
