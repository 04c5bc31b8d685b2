"""Unit tests of the chassis helpers: no I/O."""

from __future__ import annotations

import logging
import pathlib
import time

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.rpc import error_details_pb2

from pai_common import config, etags, fieldmask, names, pagination, tokens
from pai_common.errors import Aborted, FieldViolation, InvalidArgument, NotFound
from pai_common.interceptors import to_status


def test_page_size_defaults_coerces_and_rejects_negative() -> None:
    assert pagination.page_size(0) == pagination.DEFAULT_PAGE_SIZE
    assert pagination.page_size(5) == 5
    assert pagination.page_size(10**6) == pagination.MAX_PAGE_SIZE
    with pytest.raises(InvalidArgument) as caught:
        pagination.page_size(-1)
    assert caught.value.violations[0].field == "page_size"


def test_page_tokens_are_opaque_and_bound_to_their_query() -> None:
    q = pagination.fingerprint(parent="workspaces/a")
    token = pagination.PageToken("users/x", q).encode()
    assert "users/x" not in token
    assert pagination.decode_token(token, q) == "users/x"
    assert pagination.decode_token("", q) is None
    with pytest.raises(InvalidArgument) as other:
        pagination.decode_token(token, pagination.fingerprint(parent="workspaces/b"))
    assert other.value.reason == "INVALID_PAGE_TOKEN"
    with pytest.raises(InvalidArgument):
        pagination.decode_token("!!not-base64!!", q)


def test_resource_names() -> None:
    assert names.parse("workspaces/{w}/jobs/{j}", "workspaces/a/jobs/b") == {"w": "a", "j": "b"}
    with pytest.raises(InvalidArgument):
        names.parse("workspaces/{w}", "workspaces/a/jobs/b")
    assert names.workspace_of("workspaces/a/jobs/b") == "workspaces/a"
    assert names.workspace_of("users/a") is None
    assert names.is_valid_id("a-1") and not names.is_valid_id("A") and not names.is_valid_id("a-")


def test_field_masks() -> None:
    assert fieldmask.paths([], ["a", "b"]) == {"a", "b"}
    assert fieldmask.paths(["a"], ["a", "b"]) == {"a"}
    with pytest.raises(InvalidArgument) as caught:
        fieldmask.paths(["state"], ["a"])
    assert caught.value.reason == "INVALID_UPDATE_MASK"


def test_field_mask_assign_sets_only_the_named_fields_on_a_domain_object() -> None:
    import dataclasses

    from pai.scheduler.v1 import node_pb2

    @dataclasses.dataclass
    class Node:
        display_name: str = "old"
        labels: dict[str, str] = dataclasses.field(default_factory=lambda: {"a": "1"})
        cpu_milli: int = 8000

    given = node_pb2.Node(display_name="new", labels={"b": "2"}, cpu_milli=0)
    node = Node()
    fieldmask.assign(node, given, {"labels", "cpu_milli"}, ("display_name", "labels", "cpu_milli"))
    assert node == Node(display_name="old", labels={"b": "2"}, cpu_milli=0)
    assert type(node.labels) is dict  # a copy, not the message's map
    fieldmask.assign(node, given, {"display_name"})
    assert node.display_name == "new"


def test_field_mask_apply_replaces_maps_lists_and_messages_whole() -> None:
    from pai.dlc.v1 import job_pb2, job_spec_pb2

    target = job_pb2.Job(display_name="old", description="keep", labels={"a": "1", "b": "2"})
    target.spec.replica_specs.add(count=3)
    target.start_time.FromSeconds(5)
    target.replica_statuses.add(replica="worker-0")
    given = job_pb2.Job(display_name="new", description="ignored", labels={"c": "3"})
    given.spec.hyperparameters["lr"] = "0.1"
    given.replica_statuses.add(replica="master-0")
    fieldmask.apply(target, given, {"display_name", "labels", "spec", "start_time", "replica_statuses"})
    assert [r.replica for r in target.replica_statuses] == ["master-0"]
    assert (target.display_name, target.description, dict(target.labels)) == ("new", "keep", {"c": "3"})
    assert target.spec == job_spec_pb2.JobSpec(hyperparameters={"lr": "0.1"})  # not merged
    assert not target.HasField("start_time")  # unset in `given`: cleared, not kept


def test_tokens_sign_verify_and_reject() -> None:
    key = Ed25519PrivateKey.generate()
    keys = {"k1": key.public_key()}
    now = int(time.time())
    claims = {"iss": tokens.ISSUER, "aud": tokens.AUDIENCE, "sub": "users/a", "iat": now, "exp": now + 60}
    token = tokens.sign(claims, key, "k1")
    assert tokens.verify(token, keys)["sub"] == "users/a"
    with pytest.raises(tokens.InvalidToken, match="expired"):
        tokens.verify(tokens.sign({**claims, "exp": now - 60}, key, "k1"), keys)
    with pytest.raises(tokens.InvalidToken, match="unknown signing key"):
        tokens.verify(tokens.sign(claims, key, "k2"), keys)
    other = Ed25519PrivateKey.generate()
    with pytest.raises(tokens.InvalidToken, match="bad signature"):
        tokens.verify(tokens.sign(claims, other, "k1"), keys)
    with pytest.raises(tokens.InvalidToken):
        tokens.verify("a.b.c", keys)
    with pytest.raises(tokens.InvalidToken, match="lifetime"):  # even a good key cannot mint a long token
        tokens.verify(tokens.sign({**claims, "exp": now + 2 * tokens.MAX_LIFETIME_SECONDS}, key, "k1"), keys)
    with pytest.raises(tokens.InvalidToken, match="lifetime"):
        tokens.verify(tokens.sign({k: v for k, v in claims.items() if k != "iat"}, key, "k1"), keys)
    with pytest.raises(tokens.InvalidToken, match="not issued"):
        tokens.verify(tokens.sign({**claims, "aud": "other"}, key, "k1"), keys)


def test_domain_errors_become_rich_statuses() -> None:
    status = to_status(
        InvalidArgument("INVALID_ARGUMENT", "bad", violations=[FieldViolation("name", "too long")]),
        "x.pai.dev",
    )
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert status.details[0].Unpack(info) and status.details[1].Unpack(bad)
    assert info.reason == "INVALID_ARGUMENT" and info.domain == "x.pai.dev"
    assert bad.field_violations[0].field == "name"
    nf = to_status(NotFound("JOB_NOT_FOUND", resource="workspaces/a/jobs/b"), "dlc.pai.dev")
    assert nf.code == grpc.StatusCode.NOT_FOUND.value[0] and len(nf.details) == 1


def test_config_precedence(tmp_path: pathlib.Path) -> None:
    (tmp_path / "config.toml").write_text(
        'log_level = "debug"\n[auth]\nlisten = "127.0.0.1:6000"\nextra = 3\n'
    )
    env = {"PAI_HOME": str(tmp_path), "PAI_AUTH_LISTEN": "127.0.0.1:7000"}
    s = config.load("auth", env)
    assert s.listen == "127.0.0.1:7000"  # environment beats the file
    assert s.log_level == "DEBUG"  # shared key from the file
    assert s.database_url.endswith(f"{tmp_path}/auth/auth.db") and s.database_url.startswith(
        "sqlite+aiosqlite"
    )
    assert config.load("auth", {"PAI_HOME": str(tmp_path)}).listen == "127.0.0.1:6000"
    assert config.load("dlc", {"PAI_HOME": str(tmp_path)}).listen == "127.0.0.1:50053"
    (tmp_path / "bad.toml").write_text("not = [toml")
    with pytest.raises(config.ConfigError):
        config.load("auth", {"PAI_HOME": str(tmp_path), "PAI_CONFIG": str(tmp_path / "bad.toml")})


def test_where_a_service_calls_another(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PAI_DLC_LINEAGE_ENDPOINT", "PAI_LINEAGE_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    dlc = config.load("dlc", {"PAI_HOME": str(tmp_path)})
    assert dlc.endpoint_of("lineage") == "127.0.0.1:50056"  # the default port
    monkeypatch.setenv("PAI_LINEAGE_ENDPOINT", "10.0.0.5:50056")  # the stack's address
    assert dlc.endpoint_of("lineage") == "10.0.0.5:50056"
    monkeypatch.setenv("PAI_DLC_LINEAGE_ENDPOINT", "10.0.0.6:7000")  # dlc's own setting wins
    assert dlc.endpoint_of("lineage") == "10.0.0.6:7000"


def test_etags_come_from_the_row_version_and_a_stale_one_is_aborted() -> None:
    current = etags.etag_of(3)
    assert current == 'W/"3"'
    etags.check_etag("", current, resource="things/a")  # none given: no check
    etags.check_etag(current, current, resource="things/a")
    with pytest.raises(Aborted) as caught:
        etags.check_etag(etags.etag_of(2), current, resource="things/a")
    assert caught.value.reason == "ETAG_MISMATCH"
    assert caught.value.metadata == {"resource": "things/a"}
    # with an identity, a thing made again under the same name has other etags than the one before
    assert etags.etag_of(1, "0f1e2d3c-aaaa") == 'W/"0f1e2d3c-1"' != etags.etag_of(1, "99999999-bbbb")
    assert etags.content_etag("a") == etags.content_etag("a") != etags.content_etag("b")


def test_a_repeating_failure_is_logged_once_with_its_traceback_and_once_when_it_heals(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from pai_common.logs import Streak

    log = logging.getLogger("pai.test.streak")
    streak = Streak(log, "fetching")
    caplog.set_level(logging.DEBUG, logger="pai.test.streak")
    for _ in range(3):
        try:
            raise ConnectionError("nats is down")
        except ConnectionError as error:
            streak.failed(error)
    streak.ended()
    streak.ended()  # nothing more once healed
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert [r.levelname for r in caplog.records] == ["ERROR", "DEBUG", "DEBUG", "WARNING"]
    assert "works again after 3 failures" in caplog.records[-1].getMessage()
