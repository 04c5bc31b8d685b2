"""The supervisor's pieces on their own: settings, backoff, keys, credentials, addresses."""

from __future__ import annotations

import io
import os
import socket
import stat
import sys
import tomllib
from pathlib import Path

import pytest

from pai_local.children import describe_exit, guarded
from pai_local.console import Console
from pai_local.credentials import API_KEY_PATTERN, generate_admin_key, prepare_credentials
from pai_local.ports import choose_address, dial_address, port_is_free, split_address
from pai_local.settings import SERVICES, ServiceSpec, Settings, SettingsError, parse_extra_services
from pai_local.supervised import Backoff

KEY = "pai_abcdEFGH_" + "A" * 43
# Keeps a developer's own ~/.pai/config.toml out of these tests.
NO_FILE = {"PAI_CONFIG": os.devnull}


def test_defaults_start_auth_and_the_gateway_under_dot_pai() -> None:
    settings = Settings.from_env(NO_FILE)
    assert settings.services == ("auth", "scheduler", "lineage", "dlc", "gateway", "envoy")
    assert settings.home.name == ".pai"
    assert settings.nats_url is None
    assert (settings.start_timeout, settings.stop_timeout) == (60.0, 10.0)


def test_the_service_table_has_every_service_on_its_port() -> None:
    ports = {name: spec.default_port for name, spec in SERVICES.items()}
    assert ports == {
        "auth": 50051,
        "scheduler": 50052,
        "dlc": 50053,
        "eas": 50054,
        "dsw": 50055,
        "lineage": 50056,
        "gateway": 50060,
        "envoy": 8080,
    }
    assert SERVICES["auth"].module == "pai_auth"
    assert SERVICES["envoy"].probe == "http:/healthz" and SERVICES["gateway"].probe == "grpc"


def test_services_come_from_the_env_auth_first_without_duplicates() -> None:
    env = {
        **NO_FILE,
        "PAI_SERVICES": " dlc, auth,dlc,,scheduler ",
        "PAI_HOME": "/tmp/x",
        "PAI_DLC_LISTEN": "0.0.0.0:7000",
    }
    settings = Settings.from_env(env)
    assert settings.services == ("auth", "dlc", "scheduler")
    assert settings.listen == {"dlc": "0.0.0.0:7000"}
    assert settings.home == Path("/tmp/x")


def test_arguments_win_over_the_env() -> None:
    env = {**NO_FILE, "PAI_SERVICES": "dlc", "PAI_NATS_URL": "nats://elsewhere:4222", "PAI_HOME": "/tmp/x"}
    settings = Settings.from_env(env, home="/tmp/y", services="", nats_url="")
    assert (settings.home, settings.services, settings.nats_url) == (Path("/tmp/y"), (), None)
    assert Settings.from_env(env).nats_url == "nats://elsewhere:4222"


def test_the_config_file_is_read_and_the_env_wins_over_it(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        'nats_url = "nats://file:4222"\n[auth]\nlisten = "0.0.0.0:6000"\n[dlc]\nlisten = "127.0.0.1:6001"\n'
    )
    env = {"PAI_HOME": str(tmp_path), "PAI_SERVICES": "auth,dlc", "PAI_DLC_LISTEN": "127.0.0.1:7001"}
    settings = Settings.from_env(env)
    assert settings.nats_url == "nats://file:4222"
    assert settings.listen == {"auth": "0.0.0.0:6000", "dlc": "127.0.0.1:7001"}
    assert Settings.from_env({**env, "PAI_NATS_URL": "nats://env:4222"}).nats_url == "nats://env:4222"
    assert Settings.from_env(env, nats_url="").nats_url is None  # `pai_local nats` always embeds
    (tmp_path / "config.toml").write_text("not = = toml")
    with pytest.raises(SettingsError, match="config file"):
        Settings.from_env(env)


def test_unknown_services_are_refused() -> None:
    with pytest.raises(SettingsError, match="unknown service"):
        Settings.from_env({**NO_FILE, "PAI_SERVICES": "auth,billing"})


def test_extra_services_add_and_replace() -> None:
    assert parse_extra_services("fake=tests.fake_service:0, auth=my_auth:6000,x=m") == {
        "fake": ServiceSpec("tests.fake_service", 0),
        "auth": ServiceSpec("my_auth", 6000),
        "x": ServiceSpec("m", 0),
    }
    settings = Settings.from_env(
        {**NO_FILE, "PAI_LOCAL_EXTRA_SERVICES": "auth=my_auth", "PAI_SERVICES": "auth"}
    )
    assert settings.specs["auth"].module == "my_auth"


@pytest.mark.parametrize("value", ["nomodule", "Bad=mod", "a=mod:port", "a=mod:70000", "a=-mod"])
def test_bad_extra_services_are_refused(value: str) -> None:
    with pytest.raises(SettingsError):
        parse_extra_services(value)


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_bad_timeouts_are_refused(value: str) -> None:
    with pytest.raises(SettingsError):
        Settings.from_env({**NO_FILE, "PAI_LOCAL_START_TIMEOUT": value})


def test_backoff_doubles_to_thirty_seconds_and_is_forgiven_after_a_minute_ready() -> None:
    backoff = Backoff()
    delays = [backoff.next_delay(ready_for=5.0) for _ in range(9)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert backoff.next_delay(ready_for=60.0) == 0.5
    assert backoff.next_delay(ready_for=0.0) == 1.0


def test_admin_keys_have_auths_format_and_differ() -> None:
    keys = {generate_admin_key() for _ in range(50)}
    assert len(keys) == 50
    for key in keys:
        assert API_KEY_PATTERN.fullmatch(key), key
        assert len(key.split("_", 2)[2]) == 43


def test_first_credentials_are_private_toml(tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    bootstrap = prepare_credentials(path, tmp_path / "auth", "127.0.0.1:50051", None)
    assert bootstrap.created and bootstrap.api_key and bootstrap.warning is None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert tomllib.loads(path.read_text()) == {"endpoint": "127.0.0.1:50051", "api_key": bootstrap.api_key}


def test_a_key_from_the_env_is_used_for_the_first_credentials(tmp_path: Path) -> None:
    bootstrap = prepare_credentials(tmp_path / "credentials", tmp_path / "auth", "h:1", KEY)
    assert (bootstrap.api_key, bootstrap.created) == (KEY, True)
    bad = prepare_credentials(tmp_path / "other", tmp_path / "auth", "h:1", "secret")
    assert bad.api_key is None and bad.warning and not (tmp_path / "other").exists()


def test_existing_credentials_keep_their_key_and_everything_else(tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    path.write_text(f'# mine\nendpoint = "old:1"\napi_key = "{KEY}"\n\n[profile.dev]\nendpoint = "dev:1"\n')
    os.chmod(path, 0o644)
    bootstrap = prepare_credentials(path, tmp_path / "auth", "127.0.0.1:6000", None)
    assert (bootstrap.api_key, bootstrap.created) == (KEY, False)
    text = path.read_text()
    assert text.startswith("# mine\n")
    assert tomllib.loads(text) == {
        "endpoint": "127.0.0.1:6000",
        "api_key": KEY,
        "profile": {"dev": {"endpoint": "dev:1"}},
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_no_key_is_made_up_when_auth_was_initialised_before(tmp_path: Path) -> None:
    (tmp_path / "auth").mkdir()
    bootstrap = prepare_credentials(tmp_path / "credentials", tmp_path / "auth", "h:1", None)
    assert bootstrap.api_key is None and not bootstrap.created
    assert bootstrap.warning and "pai login" in bootstrap.warning
    assert not (tmp_path / "credentials").exists()


def test_unreadable_credentials_are_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    path.write_text("this is = = not toml")
    bootstrap = prepare_credentials(path, tmp_path / "auth", "h:1", None)
    assert bootstrap.api_key is None and bootstrap.warning
    assert path.read_text() == "this is = = not toml"


def test_addresses() -> None:
    assert split_address("[::1]:50051") == ("::1", 50051)
    assert dial_address("0.0.0.0:7000") == "127.0.0.1:7000"
    assert dial_address("[::]:7000") == "[::1]:7000"
    assert dial_address("localhost:7000") == "localhost:7000"
    for bad in ("nohost", "host:", ":80", "host:http"):
        with pytest.raises(ValueError):
            split_address(bad)


def test_a_busy_default_port_is_replaced_by_a_free_one() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        busy = listener.getsockname()[1]
        assert not port_is_free(busy)
        chosen = choose_address(busy)
        assert chosen != f"127.0.0.1:{busy}" and port_is_free(split_address(chosen)[1])
    assert port_is_free(busy)
    assert choose_address(busy) == f"127.0.0.1:{busy}"


def test_exits_are_described() -> None:
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(-9) == "killed by SIGKILL"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the guard is Linux-only")
def test_the_guard_execs_the_command_with_our_pid() -> None:
    argv = guarded(["prog", "--flag"])
    assert argv[-2:] == ["prog", "--flag"]
    assert str(os.getpid()) in argv


def test_console_lines_up_names_and_survives_a_closed_stdout() -> None:
    stream = io.StringIO()
    console = Console(["auth", "scheduler"], stream)
    console.line("auth", "hello")
    console.say("ready")
    assert stream.getvalue() == "auth      | hello\npai-local | ready\n"
    stream.close()
    console.say("nobody reads this")  # must not raise
