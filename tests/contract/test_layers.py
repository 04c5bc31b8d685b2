"""Import rules no linter in requirements.lock enforces: the layers and rooms of each service."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SERVICES = sorted(p for p in (ROOT / "services").iterdir() if (p / "src").is_dir())
FORBIDDEN_IN_DOMAIN = ("grpc", "sqlalchemy", "nats", "pai.", "pai_common", "google.protobuf", "alembic")


def imports(path: pathlib.Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("service", SERVICES, ids=lambda p: p.name)
def test_domain_is_plain_python(service: pathlib.Path) -> None:
    for module in (service / "src").glob("pai_*/domain/*.py"):
        for name in imports(module):
            assert not name.startswith(FORBIDDEN_IN_DOMAIN) and name != "pai", f"{module} imports {name}"


@pytest.mark.parametrize("service", SERVICES, ids=lambda p: p.name)
def test_no_service_imports_another(service: pathlib.Path) -> None:
    own = f"pai_{service.name}"
    others = {f"pai_{p.name}" for p in SERVICES} - {own}
    for module in (service / "src").rglob("*.py"):
        for name in imports(module):
            assert name.split(".")[0] not in others, f"{module} imports {name}"


def test_chassis_imports_no_service() -> None:
    services = {f"pai_{p.name}" for p in SERVICES}
    for module in (ROOT / "libs" / "pai-common" / "src").rglob("*.py"):
        for name in imports(module):
            assert name.split(".")[0] not in services, f"{module} imports {name}"
