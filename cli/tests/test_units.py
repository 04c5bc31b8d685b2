"""The parts that need no server: config precedence, durations, error rendering, paging."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import grpc
import pytest

from pai_cli import config
from pai_cli.client import collect
from pai_cli.commands.keys import duration
from pai_cli.errors import ApiError, CliError


def test_flag_beats_environment_beats_file(tmp_path: Path) -> None:
    (tmp_path / "credentials").write_text(
        'endpoint = "file:1"\napi_key = "file-key"\nworkspace = "ws-file"\n'
    )
    env = {"PAI_HOME": str(tmp_path)}

    from_file = config.load(env=env)
    assert (from_file.endpoint, from_file.api_key, from_file.workspace) == ("file:1", "file-key", "ws-file")

    env |= {"PAI_ENDPOINT": "env:2", "PAI_API_KEY": "env-key", "PAI_WORKSPACE": "ws-env"}
    from_env = config.load(env=env)
    assert (from_env.endpoint, from_env.api_key, from_env.workspace) == ("env:2", "env-key", "ws-env")

    from_flags = config.load(endpoint="flag:3", api_key="flag-key", env=env)
    assert (from_flags.endpoint, from_flags.api_key) == ("flag:3", "flag-key")


def test_nothing_configured_is_not_logged_in(tmp_path: Path) -> None:
    loaded = config.load(env={"PAI_HOME": str(tmp_path)})
    assert loaded.workspace == "default"
    with pytest.raises(CliError, match=r"^not logged in: run `pai login` or `make up`"):
        loaded.require_login()


def test_a_broken_credentials_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "credentials").write_text("endpoint = \n")
    with pytest.raises(CliError, match=r"cannot read .*credentials"):
        config.load(env={"PAI_HOME": str(tmp_path)})


def test_write_credentials_is_private_even_over_a_public_file(tmp_path: Path) -> None:
    path = tmp_path / "home" / "credentials"
    config.write_credentials(path, {"endpoint": "a:1"})
    path.chmod(0o644)
    config.write_credentials(path, {"api_key": "k"})
    assert path.stat().st_mode & 0o777 == 0o600
    assert config.read_credentials(path) == {"endpoint": "a:1", "api_key": "k"}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 30 * 86400), ("12h", 43200), ("1w2d", 9 * 86400), ("90m", 5400), ("45S", 45)],
)
def test_duration(text: str, seconds: int) -> None:
    assert duration(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "30", "d", "3x", "0d", "-1d", "1d 2h"])
def test_bad_duration(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        duration(text)


def test_api_error_lists_reason_and_each_violation() -> None:
    error = ApiError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "bad request",
        "127.0.0.1:1",
        reason="INVALID_ARGUMENT",
        domain="auth.pai.dev",
        violations=[("user_id", "too long"), ("user.email", "not an email")],
    )
    assert str(error).splitlines() == [
        "INVALID_ARGUMENT: bad request",
        "  reason: INVALID_ARGUMENT (auth.pai.dev)",
        "  - user_id: too long",
        "  - user.email: not an email",
    ]


def test_collect_follows_tokens_and_honours_limit() -> None:
    pages = {"": ([1, 2], "a"), "a": ([3, 4], "b"), "b": ([5], "")}
    asked: list[tuple[str, int]] = []

    def fetch(token: str, size: int) -> tuple[list[int], str]:
        asked.append((token, size))
        return pages[token]

    assert collect(fetch) == [1, 2, 3, 4, 5]
    assert collect(fetch, limit=3) == [1, 2, 3]
    assert asked[-2:] == [("", 3), ("a", 1)]


def test_dataset_flag_names_a_version_or_the_latest() -> None:
    from pai_cli.commands.specs import dataset_version_name
    from pai_cli.errors import UsageError

    ws = "workspaces/ml"
    assert dataset_version_name(ws, "qa") == "workspaces/ml/datasets/qa/versions/@latest"
    assert dataset_version_name(ws, "qa:3") == "workspaces/ml/datasets/qa/versions/3"
    full = "workspaces/other/datasets/qa/versions/1"
    assert dataset_version_name(ws, full) == full
    with pytest.raises(UsageError):
        dataset_version_name(ws, ":3")
