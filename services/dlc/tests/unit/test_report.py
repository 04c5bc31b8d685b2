"""`pai.dlc.report` prints the line dlc parses back into metric series."""

from __future__ import annotations

import io
import pathlib

import pytest

from pai.dlc import report
from pai_dlc.app import metrics
from pai_dlc.domain.job import Job, ReplicaStatus
from pai_dlc.domain.spec import JobSpec, Role
from pai_runtime.logfile import format_record


def job(logs: dict[int, dict[str, str]], ranks: int = 1) -> Job:
    j = Job("workspaces/w/jobs/j", "u", JobSpec())
    j.replica_statuses = [ReplicaStatus(Role.WORKER, r, f"worker-{r}", r) for r in range(ranks)]
    j.runtime.logs = logs
    return j


def test_report_writes_one_flushed_line() -> None:
    out = io.StringIO()
    report(step=3, stream=out, loss=0.5, accuracy=1)
    assert out.getvalue() == '@pai.metric {"step": 3, "loss": 0.5, "accuracy": 1.0}\n'


@pytest.mark.parametrize(
    ("step", "values"),
    [(-1, {"loss": 1.0}), (True, {"loss": 1.0}), (1, {}), (1, {"loss": float("nan")}), (1, {"loss": "x"})],
)
def test_report_refuses_what_dlc_could_not_read(step: object, values: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        report(step=step, stream=io.StringIO(), **values)  # type: ignore[arg-type]


def test_dlc_reads_reported_lines_back_as_series(tmp_path: pathlib.Path) -> None:
    out = io.StringIO()
    for step, loss in [(1, 2.0), (2, 1.0)]:
        report(step=step, stream=out, loss=loss)
    log = tmp_path / "worker-0.log"
    lines = [format_record(1_000 + i, "stdout", text) for i, text in enumerate(out.getvalue().splitlines())]
    log.write_bytes(b"".join([format_record(999, "stderr", '@pai.metric {"step": 9, "loss": 0}'), *lines]))
    assert metrics.series_of(job({0: {"worker-0": str(log)}}), "loss") == [(1, 2.0), (2, 1.0)]  # not stderr


def test_final_metrics_are_the_last_values_of_the_lowest_rank(tmp_path: pathlib.Path) -> None:
    def log(name: str, lines: list[str]) -> str:
        path = tmp_path / f"{name}.log"
        path.write_bytes(b"".join(format_record(1_000 + i, "stdout", t) for i, t in enumerate(lines)))
        return str(path)

    logs = {
        0: {"worker-0": log("a0w0", ['@pai.metric {"step": 1, "loss": 3.0, "acc": 0.1}'])},
        1: {
            "worker-0": log(
                "a1w0", ['@pai.metric {"step": 2, "loss": 2.0}', '@pai.metric {"step": 3, "loss": 1.5}']
            ),
            "worker-1": log("a1w1", ['@pai.metric {"step": 3, "loss": 9.0, "eval/f1": 0.7, "bad key": 1}']),
        },
    }
    final = metrics.final_metrics(job(logs, ranks=2))
    # the newest attempt's last value; a key only rank 1 reports comes from rank 1; keys a model
    # registry cannot hold are dropped
    assert final == {"acc": 0.1, "eval/f1": 0.7, "loss": 1.5}
