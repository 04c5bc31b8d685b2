"""`pai` against the real auth service: login, workspaces, users, members, keys, audit, tokens, errors."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from pai_cli import client as client_module
from pai_common.testing import free_port

from .conftest import AuthProcess, Pai

SECRET = re.compile(r"^\s+(pai_[a-z0-9]{8}_[A-Za-z0-9_-]{43})$", re.MULTILINE)


def test_login_writes_private_credentials_and_keeps_other_keys(
    pai: Pai, auth: AuthProcess, cli_home: Path
) -> None:
    credentials = cli_home / "credentials"
    cli_home.mkdir()
    credentials.write_text('profile = "kept"\nendpoint = "127.0.0.1:1"\n')
    credentials.chmod(0o644)

    result = pai.ok(
        "login", "--endpoint", auth.address, "--api-key", auth.admin_key, "--workspace", "default"
    )

    assert "users/admin" in result.out
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    stored = tomllib.loads(credentials.read_text())
    assert stored == {
        "profile": "kept",
        "endpoint": auth.address,
        "api_key": auth.admin_key,
        "workspace": "default",
    }
    assert pai.ok("whoami").out.splitlines()[0].split() == ["PRINCIPAL:", "users/admin"]


def test_login_with_a_bad_key_fails_and_writes_nothing(pai: Pai, auth: AuthProcess, cli_home: Path) -> None:
    wrong = "pai_aaaaaaaa_" + "A" * 43
    result = pai("login", "--endpoint", auth.address, "--api-key", wrong)

    assert result.code == 1
    assert result.err.startswith("error: UNAUTHENTICATED: ")
    assert "reason: CREDENTIAL_INVALID" in result.err
    assert not (cli_home / "credentials").exists()


def test_without_credentials_says_how_to_log_in(pai: Pai) -> None:
    result = pai("workspace", "list")

    assert result.code == 1
    assert result.err.startswith("error: not logged in: run `pai login` or `make up`")


def test_flags_and_environment_override_the_credentials_file(
    admin: Pai, auth: AuthProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAI_ENDPOINT", f"127.0.0.1:{free_port()}")
    assert "cannot reach pai" in admin("whoami").err  # the environment beats the file
    assert admin.ok("whoami", "--endpoint", auth.address).out.startswith("PRINCIPAL:")  # the flag beats both


def test_workspace_create_list_get_delete(admin: Pai) -> None:
    created = admin.ok(
        "workspace", "create", "cli-ws", "--display-name", "CLI team", "--description", "tests"
    )
    assert "workspaces/cli-ws" in created.out

    table = admin.ok("workspace", "list").out.splitlines()
    assert table[0].split()[:2] == ["ID", "DISPLAY"]
    assert any(line.split()[:3] == ["cli-ws", "CLI", "team"] for line in table[1:])

    listed = json.loads(admin.ok("workspace", "list", "--output", "json").out)
    mine = next(w for w in listed if w["name"] == "workspaces/cli-ws")
    assert mine["displayName"] == "CLI team"
    assert mine["state"] == "ACTIVE"

    got = json.loads(admin.ok("-o", "json", "workspace", "get", "cli-ws").out)
    assert got["description"] == "tests"

    assert json.loads(admin.ok("workspace", "delete", "cli-ws", "-o", "json").out) == {
        "name": "workspaces/cli-ws",
        "deleted": True,
    }
    missing = admin("workspace", "get", "cli-ws")
    assert missing.code == 1
    assert missing.err.startswith("error: NOT_FOUND: ")
    assert "reason: WORKSPACE_NOT_FOUND" in missing.err


def test_list_pages_through_every_page_or_stops_at_limit(admin: Pai, monkeypatch: pytest.MonkeyPatch) -> None:
    for n in range(3):
        admin.ok("workspace", "create", f"page-{n}")
    monkeypatch.setattr(client_module, "PAGE_SIZE", 2)  # force several pages from the real server

    every = [w["name"] for w in json.loads(admin.ok("workspace", "list", "-o", "json").out)]
    assert {"workspaces/page-0", "workspaces/page-1", "workspaces/page-2", "workspaces/default"} <= set(every)
    assert len(every) == len(set(every))

    assert len(json.loads(admin.ok("workspace", "list", "-o", "json", "--limit", "3").out)) == 3


def test_user_member_and_key_lifecycle(admin: Pai) -> None:
    admin.ok("workspace", "create", "team")
    user = json.loads(admin.ok("user", "create", "bob", "--email", "bob@example.com", "-o", "json").out)
    assert user["name"] == "users/bob"
    assert user["platformAdmin"] is False
    assert "bob" in admin.ok("user", "list").out

    member = json.loads(
        admin.ok("member", "add", "bob", "--role", "developer", "--workspace", "team", "-o", "json").out
    )
    assert member == member | {
        "name": "workspaces/team/members/bob",
        "user": "users/bob",
        "role": "DEVELOPER",
    }
    members = json.loads(admin.ok("member", "list", "-w", "team", "-o", "json").out)
    assert {m["user"]: m["role"] for m in members} == {"users/admin": "OWNER", "users/bob": "DEVELOPER"}
    assert "VIEWER" in admin.ok("member", "set-role", "bob", "--role", "viewer", "-w", "team").out

    created = admin.ok("key", "create", "--user", "bob", "--display-name", "laptop", "--expires-in", "30d")
    assert "shown only once" in created.out
    match = SECRET.search(created.out)
    assert match is not None, created.out
    secret = match.group(1)

    as_bob = json.loads(admin.ok("whoami", "--api-key", secret, "-o", "json").out)
    assert as_bob["name"] == "users/bob"
    assert as_bob["workspaceRoles"] == [{"workspace": "workspaces/team", "role": "VIEWER"}]

    keys = json.loads(admin.ok("key", "list", "--user", "bob", "-o", "json").out)
    assert [k["prefix"] for k in keys] == [secret[:12]]
    assert keys[0]["secret"] == ""  # never shown again
    assert keys[0]["expireTime"]

    revoked = json.loads(admin.ok("key", "revoke", secret[:12], "--user", "bob", "-o", "json").out)
    assert revoked["state"] == "REVOKED"
    refused = admin("whoami", "--api-key", secret)
    assert refused.code == 1
    assert refused.err.startswith("error: UNAUTHENTICATED: ")

    admin.ok("member", "remove", "bob", "-w", "team")
    assert "bob" not in admin.ok("member", "list", "-w", "team").out
    disabled = json.loads(admin.ok("user", "disable", "bob", "-o", "json").out)
    assert disabled["state"] == "DISABLED"
    assert json.loads(admin.ok("user", "enable", "bob", "-o", "json").out)["state"] == "ACTIVE"


def test_key_list_defaults_to_the_callers_own_keys(admin: Pai, auth: AuthProcess) -> None:
    keys = json.loads(admin.ok("key", "list", "-o", "json").out)
    assert auth.admin_key[:12] in [k["prefix"] for k in keys]
    assert all(k["name"].startswith("users/admin/apiKeys/") for k in keys)


def test_service_account_key_acts_as_the_account(admin: Pai) -> None:
    admin.ok("service-account", "create", "ci", "--role", "developer", "--display-name", "CI")
    assert "ci" in admin.ok("service-account", "list").out
    created = json.loads(admin.ok("key", "create", "--service-account", "ci", "-o", "json").out)
    assert created["name"].startswith("workspaces/default/serviceAccounts/ci/apiKeys/")

    principal = json.loads(admin.ok("whoami", "--api-key", created["secret"], "-o", "json").out)
    assert principal["name"] == "workspaces/default/serviceAccounts/ci"

    admin.ok("service-account", "delete", "ci")
    assert admin("whoami", "--api-key", created["secret"]).code == 1


def test_audit_list_shows_mutations(admin: Pai) -> None:
    admin.ok("workspace", "create", "audited")
    admin.ok("user", "create", "carol")
    admin.ok("member", "add", "carol", "--role", "viewer", "-w", "audited")

    entries = json.loads(admin.ok("audit", "list", "-w", "audited", "-o", "json").out)
    assert any(e["method"].endswith("/CreateMember") and e["result"] == "OK" for e in entries), entries

    everything = json.loads(
        admin.ok("audit", "list", "--all", "--principal", "admin", "--limit", "5", "-o", "json").out
    )
    assert 0 < len(everything) <= 5
    assert {e["principal"] for e in everything} == {"users/admin"}
    assert admin.ok("audit", "list", "--all", "--limit", "2").out.splitlines()[0].split()[:3] == [
        "TIME",
        "PRINCIPAL",
        "METHOD",
    ]


def test_token_issue(admin: Pai) -> None:
    issued = json.loads(admin.ok("token", "issue", "--ttl", "60", "-o", "json").out)
    assert issued["token"].count(".") == 2
    assert issued["expireTime"]
    assert admin.ok("whoami", "--api-key", issued["token"]).out.split()[1] == "users/admin"


def test_bad_id_is_an_invalid_argument_with_the_field_and_no_traceback(
    admin: Pai, auth: AuthProcess, cli_home: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pai_cli", "workspace", "create", "Bad Name"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error: INVALID_ARGUMENT: ")
    assert "  reason: INVALID_ARGUMENT (auth.pai.dev)" in lines
    assert any(line.startswith("  - workspace_id: ") for line in lines), lines
    assert result.stdout == ""


def test_unreachable_server_says_so(pai: Pai) -> None:
    result = pai("whoami", "--endpoint", f"127.0.0.1:{free_port()}", "--api-key", "pai_x")

    assert result.code == 1
    assert re.match(r"error: cannot reach pai at 127\.0\.0\.1:\d+: is `make up` running\?", result.err)


def test_usage_errors_exit_2(pai: Pai) -> None:
    assert pai("member", "add", "bob").code == 2  # --role is required
    assert pai("key", "create", "--user", "a", "--service-account", "b").code == 2
    assert pai("key", "create", "--expires-in", "soon").code == 2
    assert pai("workspace", "list", "--output", "yaml").code == 2
    assert pai().code == 2
    assert pai("--help").code == 0
