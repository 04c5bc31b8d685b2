"""The API contract, checked over the generated descriptors: what buf lint cannot see."""

from __future__ import annotations

import pathlib
import re
from collections.abc import Iterator

import pytest
from google.api import annotations_pb2 as http_annotations
from google.api import resource_pb2
from google.protobuf import descriptor_pb2

import pai
from pai.api.v1 import annotations_pb2

DESCRIPTORS = pathlib.Path(pai.__file__).parent / "descriptors.binpb"
SERVICES = ("auth", "scheduler", "dlc", "eas", "dsw", "lineage")
PERMISSION = re.compile(r"^(?P<svc>[a-z]+)\.[a-z][a-zA-Z0-9]*\.[a-z][a-zA-Z0-9]*$")
SHARED_IMPORTS = ("google/", "buf/validate/", "pai/api/v1/")


def _files() -> list[descriptor_pb2.FileDescriptorProto]:
    fds = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTORS.read_bytes())
    return [f for f in fds.file if f.package.startswith("pai.") and f.package != "pai.api.v1"]


FILES = _files()


def _messages(f: descriptor_pb2.FileDescriptorProto) -> Iterator[tuple[str, descriptor_pb2.DescriptorProto]]:
    def walk(
        prefix: str, msgs: list[descriptor_pb2.DescriptorProto]
    ) -> Iterator[tuple[str, descriptor_pb2.DescriptorProto]]:
        for m in msgs:
            yield f"{prefix}.{m.name}", m
            yield from walk(f"{prefix}.{m.name}", list(m.nested_type))

    yield from walk(f.package, list(f.message_type))


def _all_messages() -> dict[str, descriptor_pb2.DescriptorProto]:
    return {name: m for f in FILES for name, m in _messages(f)}


MESSAGES = _all_messages()


def _methods() -> Iterator[
    tuple[str, descriptor_pb2.FileDescriptorProto, descriptor_pb2.MethodDescriptorProto]
]:
    for f in FILES:
        for s in f.service:
            for m in s.method:
                yield f"{f.package}.{s.name}/{m.name}", f, m


METHODS = list(_methods())


def test_all_six_services_have_protos() -> None:
    packages = {f.package for f in FILES}
    for svc in SERVICES:
        assert f"pai.{svc}.v1" in packages, f"no protos for {svc}"
        names = {pathlib.PurePath(f.name).name for f in FILES if f.package == f"pai.{svc}.v1"}
        assert {"events.proto", "errors.proto"} <= names, f"{svc} lacks events.proto or errors.proto"
        assert any(f.service for f in FILES if f.package == f"pai.{svc}.v1"), f"{svc} declares no service"


@pytest.mark.parametrize("f", FILES, ids=lambda f: f.name)
def test_no_cross_service_imports(f: descriptor_pb2.FileDescriptorProto) -> None:
    own = f"pai/{f.package.split('.')[1]}/"
    for dep in f.dependency:
        assert dep.startswith(own) or dep.startswith(SHARED_IMPORTS), f"{f.name} imports {dep}"


@pytest.mark.parametrize("name,method", [(n, m) for n, _, m in METHODS], ids=[n for n, _, _ in METHODS])
def test_every_rpc_has_http_rule_and_permission(
    name: str, method: descriptor_pb2.MethodDescriptorProto
) -> None:
    opts = method.options
    assert opts.HasExtension(http_annotations.http), f"{name} has no google.api.http rule"
    rule = opts.Extensions[http_annotations.http]
    path = getattr(rule, rule.WhichOneof("pattern"))
    assert path.startswith("/api/v1/"), f"{name}: http path {path} is not under /api/v1/"
    assert opts.HasExtension(annotations_pb2.authz), f"{name} declares no pai.api.v1.authz rule"
    authz = opts.Extensions[annotations_pb2.authz]
    assert authz.scope != annotations_pb2.AuthzRule.SCOPE_UNSPECIFIED, f"{name}: authz scope unset"
    match = PERMISSION.match(authz.permission)
    assert match, f"{name}: permission {authz.permission!r} is not <service>.<collection>.<verb>"
    assert match["svc"] == name.split(".")[1], f"{name}: permission names another service"
    if authz.scope == annotations_pb2.AuthzRule.RESOURCE:
        request = MESSAGES[method.input_type.lstrip(".")]
        top = authz.resource_field.split(".")[0]
        assert top in {f.name for f in request.field}, (
            f"{name}: resource_field {authz.resource_field} not in request"
        )


def _standard(prefix: str) -> list[tuple[str, descriptor_pb2.MethodDescriptorProto]]:
    return [(n, m) for n, _, m in METHODS if n.rsplit("/", 1)[1].startswith(prefix)]


@pytest.mark.parametrize("name,method", _standard("List"), ids=[n for n, _ in _standard("List")])
def test_list_shape(name: str, method: descriptor_pb2.MethodDescriptorProto) -> None:
    request = MESSAGES[method.input_type.lstrip(".")]
    response = MESSAGES[method.output_type.lstrip(".")]
    fields = {f.name: f for f in request.field}
    assert (
        "page_size" in fields and fields["page_size"].type == descriptor_pb2.FieldDescriptorProto.TYPE_INT32
    ), name
    assert "page_token" in fields, f"{name} request lacks page_token"
    out = {f.name: f for f in response.field}
    assert "next_page_token" in out, f"{name} response lacks next_page_token"
    repeated = [f for f in response.field if f.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED]
    assert repeated and repeated[0].number == 1, f"{name} response's field 1 is not the repeated resources"


@pytest.mark.parametrize("name,method", _standard("Update"), ids=[n for n, _ in _standard("Update")])
def test_update_has_field_mask(name: str, method: descriptor_pb2.MethodDescriptorProto) -> None:
    request = MESSAGES[method.input_type.lstrip(".")]
    masks = [f for f in request.field if f.name == "update_mask"]
    assert masks and masks[0].type_name == ".google.protobuf.FieldMask", f"{name} lacks update_mask"


RESOURCES = [(n, m) for n, m in MESSAGES.items() if m.options.HasExtension(resource_pb2.resource)]


def test_there_are_resources() -> None:
    assert len(RESOURCES) >= 20


@pytest.mark.parametrize("name,message", RESOURCES, ids=[n for n, _ in RESOURCES])
def test_resource_name_first_and_etag(name: str, message: descriptor_pb2.DescriptorProto) -> None:
    first = message.field[0]
    assert first.name == "name" and first.number == 1, f"{name}: `name = 1` must be the first field"
    assert "etag" in {f.name for f in message.field}, f"{name} has no etag"


ENUMS = [
    (f"{prefix}.{e.name}", e)
    for f in FILES
    for prefix, enums in [(f.package, f.enum_type), *((n, m.enum_type) for n, m in _messages(f))]
    for e in enums
]


@pytest.mark.parametrize("name,enum", ENUMS, ids=[n for n, _ in ENUMS])
def test_enum_zero_is_unspecified(name: str, enum: descriptor_pb2.EnumDescriptorProto) -> None:
    zero = [v for v in enum.value if v.number == 0]
    assert zero and zero[0].name.endswith("_UNSPECIFIED"), f"{name}: zero value must be *_UNSPECIFIED"
    if enum.name == "State":
        assert zero[0].name == "STATE_UNSPECIFIED", f"{name}: must be STATE_UNSPECIFIED = 0"


@pytest.mark.parametrize("svc", SERVICES)
def test_error_reasons_enum(svc: str) -> None:
    reasons = MESSAGES.get(f"pai.{svc}.v1.ErrorReason")
    files = [f for f in FILES if f.package == f"pai.{svc}.v1" and f.name.endswith("errors.proto")]
    enums = [e for f in files for e in f.enum_type if e.name == "ErrorReason"]
    assert reasons is None and enums, f"{svc}: errors.proto must declare enum ErrorReason"
    assert len(enums[0].value) > 3
