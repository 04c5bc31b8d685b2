"""The role map against a literal table written from the product's intent, not from the code."""

from __future__ import annotations

import pathlib

import pytest
from google.protobuf import descriptor_pb2

import pai
from pai.api.v1 import annotations_pb2
from pai_auth.domain import policy, roles
from pai_auth.domain.model import Principal

# permission -> the weakest role that holds it in its workspace (None: no workspace role does).
EXPECTED = {
    "auth.workspaces.get": "VIEWER",
    "auth.members.list": "VIEWER",
    "auth.members.get": "VIEWER",
    "auth.serviceAccounts.list": "DEVELOPER",
    "auth.serviceAccounts.get": "DEVELOPER",
    "auth.members.create": "ADMIN",
    "auth.members.update": "ADMIN",
    "auth.members.delete": "ADMIN",
    "auth.serviceAccounts.create": "ADMIN",
    "auth.apiKeys.create": "ADMIN",
    "auth.apiKeys.revoke": "ADMIN",
    "auth.auditEntries.list": "ADMIN",
    "auth.workspaces.update": "ADMIN",
    "auth.workspaces.delete": "OWNER",
    "dlc.jobs.get": "VIEWER",
    "dlc.jobs.readLogs": "VIEWER",
    "dlc.jobs.create": "DEVELOPER",
    "dlc.jobs.stop": "DEVELOPER",
    "eas.services.setTraffic": "DEVELOPER",
    "dsw.notebooks.create": "DEVELOPER",
    "lineage.models.setAlias": "DEVELOPER",
    "scheduler.workloads.create": "DEVELOPER",
    "scheduler.workloads.get": "VIEWER",
}


@pytest.mark.parametrize("permission,weakest", sorted(EXPECTED.items()))
def test_each_role_holds_what_the_table_says(permission: str, weakest: str) -> None:
    for role in roles.ROLES:
        assert roles.role_allows(role, permission) == roles.at_least(role, weakest), (role, permission)


def test_every_resource_scoped_permission_in_the_api_is_held_by_owners() -> None:
    fds = descriptor_pb2.FileDescriptorSet.FromString(
        (pathlib.Path(pai.__file__).parent / "descriptors.binpb").read_bytes()
    )
    seen = 0
    for f in fds.file:
        for s in f.service:
            for m in s.method:
                rule = m.options.Extensions[annotations_pb2.authz]
                if rule.scope == annotations_pb2.AuthzRule.RESOURCE and not rule.permission.startswith(
                    "auth.users."
                ):
                    seen += 1
                    assert roles.role_allows("OWNER", rule.permission), rule.permission
    assert seen > 100


def test_self_service_and_platform_scope() -> None:
    alice = Principal("users/alice", False, {"workspaces/a": "OWNER"})
    assert policy.decide(alice, policy.RESOURCE, "auth.apiKeys.create", "users/alice").allowed
    assert not policy.decide(alice, policy.RESOURCE, "auth.apiKeys.create", "users/bob").allowed
    assert not policy.decide(alice, policy.RESOURCE, "auth.users.delete", "users/alice").allowed
    assert not policy.decide(alice, policy.PLATFORM, "auth.users.create", "").allowed
    assert not policy.decide(alice, policy.RESOURCE, "dlc.jobs.get", "workspaces/b/jobs/x").allowed
    assert not policy.decide(alice, policy.RESOURCE, "auth.auditEntries.list", "workspaces/-").allowed
    assert not policy.decide(alice, 0, "dlc.jobs.get", "workspaces/a/jobs/x").allowed  # no rule: deny
    root = Principal("users/root", True, {})
    assert policy.decide(root, policy.PLATFORM, "auth.users.create", "").allowed
