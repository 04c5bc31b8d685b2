"""Generate the Python code and the descriptor set for protos/.

Writes into libs/pai-protos/src (gitignored): `pai/<svc>/v1/*_pb2.py`, `*_pb2_grpc.py` and
mypy-protobuf stubs for our protos, the vendored `buf/validate` module the generated code
imports (googleapis-common-protos provides `google.api`/`google.rpc` at run time), and
`pai/descriptors.binpb`, a FileDescriptorSet with imports and source info that the gateway's
transcoder and the contract tests read.

Skips the work when neither the protos nor this script changed since the last run.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
THIRD_PARTY = PROTOS / "third_party"
OUT = ROOT / "libs" / "pai-protos" / "src"
STAMP = OUT / ".gen-stamp"
DESCRIPTORS = OUT / "pai" / "descriptors.binpb"
OVERLAY = ROOT / "libs" / "pai-protos" / "overlay"  # hand-written modules copied into the tree


def _inputs() -> list[pathlib.Path]:
    return sorted([*PROTOS.rglob("*.proto"), *OVERLAY.rglob("*.py")])


def _fingerprint(files: list[pathlib.Path]) -> str:
    h = hashlib.sha256(pathlib.Path(__file__).read_bytes())
    for f in files:
        h.update(str(f.relative_to(ROOT)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def main() -> int:
    import grpc_tools

    files = _inputs()
    fingerprint = _fingerprint(files)
    if "--force" not in sys.argv and STAMP.exists() and STAMP.read_text() == fingerprint:
        return 0

    own = [f.relative_to(PROTOS) for f in files if f.suffix == ".proto" and THIRD_PARTY not in f.parents]
    vendored = [THIRD_PARTY / "buf" / "validate" / "validate.proto"]
    for sub in ("pai", "buf"):
        shutil.rmtree(OUT / sub, ignore_errors=True)
    OUT.mkdir(parents=True, exist_ok=True)

    bindir = pathlib.Path(sys.executable).parent
    wkt = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"-I{THIRD_PARTY}",
        f"-I{wkt}",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={OUT}",
        f"--grpc_python_out={OUT}",
        f"--mypy_out=quiet:{OUT}",
        f"--mypy_grpc_out=quiet:{OUT}",
        *[str(p) for p in own],
        *[str(p.relative_to(THIRD_PARTY)) for p in vendored],
    ]
    subprocess.run(cmd, check=True, cwd=PROTOS)

    DESCRIPTORS.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"-I{THIRD_PARTY}",
            f"-I{wkt}",
            "--include_imports",
            "--include_source_info",
            f"--descriptor_set_out={DESCRIPTORS}",
            *[str(p) for p in own],
            # The transcoder turns google.rpc.Status details into JSON only for types it knows.
            "google/rpc/status.proto",
            "google/rpc/error_details.proto",
        ],
        check=True,
        cwd=PROTOS,
    )

    # Regular packages (not namespace packages) so mypy and importlib agree on the layout;
    # the grpc stubs of a package without services are removed to keep the tree honest.
    for d in [*(OUT / "pai").rglob("*"), OUT / "pai", *(OUT / "buf").rglob("*"), OUT / "buf"]:
        if d.is_dir():
            (d / "__init__.py").touch()
    # hand-written modules that live in the generated packages (e.g. `pai.dlc.report`)
    for src in OVERLAY.rglob("*.py"):
        dest = OUT / src.relative_to(OVERLAY)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
    (OUT / "pai" / "py.typed").touch()
    (OUT / "buf" / "py.typed").touch()
    STAMP.write_text(fingerprint)
    count = sum(1 for _ in (OUT / "pai").rglob("*_pb2.py"))
    print(f"gen_protos: {count} modules and {DESCRIPTORS.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    raise SystemExit(main())
