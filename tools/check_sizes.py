"""Size limits for hand-written code: no module over 400 lines in services/, libs/, gateway/, cli/,
deploy/local/ and tools/ (tests included), no function over 60 lines in their sources (a test may
walk a long scenario); generated code and migrations aside. benchmarks/ are standalone scripts and
not checked. Run by `make lint`."""

from __future__ import annotations

import ast
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
TREES = ("services", "libs/pai-common", "libs/pai-runtime", "gateway", "cli", "deploy/local", "tools")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def skipped(path: pathlib.Path) -> bool:
    parts = path.parts
    return "migrations" in parts or "pai-protos" in parts or path.name.endswith(("_pb2.py", "_pb2_grpc.py"))


def problems() -> list[str]:
    found: list[str] = []
    for tree in TREES:
        for path in sorted((ROOT / tree).rglob("*.py")):
            if skipped(path):
                continue
            rel = path.relative_to(ROOT)
            text = path.read_text()
            lines = text.count("\n")
            if lines > MAX_MODULE_LINES:
                found.append(f"{rel}: {lines} lines (at most {MAX_MODULE_LINES})")
            if "src" not in rel.parts:
                continue
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    length = (node.end_lineno or node.lineno) - node.lineno + 1
                    if length > MAX_FUNCTION_LINES:
                        found.append(
                            f"{rel}:{node.lineno}: {node.name} has {length} lines (at most {MAX_FUNCTION_LINES})"
                        )
    return found


def main() -> int:
    found = problems()
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
