"""Write protos/third_party/buf/validate/validate.proto from the installed protovalidate wheel.

Nothing outside the package registries is reachable here, and the protovalidate wheel ships
its schema only as an embedded FileDescriptorProto. This prints that descriptor back as
.proto source, so protoc and buf compile our constraints against exactly the schema the
runtime validator reads. Comments are not in the descriptor and so are not reproduced.
"""

from __future__ import annotations

import ast
import pathlib
import sys

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    field_mask_pb2,
    message_factory,
    text_encoding,
    text_format,
    timestamp_pb2,
)

F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    F.TYPE_DOUBLE: "double",
    F.TYPE_FLOAT: "float",
    F.TYPE_INT64: "int64",
    F.TYPE_UINT64: "uint64",
    F.TYPE_INT32: "int32",
    F.TYPE_FIXED64: "fixed64",
    F.TYPE_FIXED32: "fixed32",
    F.TYPE_BOOL: "bool",
    F.TYPE_STRING: "string",
    F.TYPE_BYTES: "bytes",
    F.TYPE_UINT32: "uint32",
    F.TYPE_SFIXED32: "sfixed32",
    F.TYPE_SFIXED64: "sfixed64",
    F.TYPE_SINT32: "sint32",
    F.TYPE_SINT64: "sint64",
}
_LABELS = {F.LABEL_OPTIONAL: "optional", F.LABEL_REPEATED: "repeated", F.LABEL_REQUIRED: "required"}


def _serialized_descriptor() -> bytes:
    import protovalidate

    src = pathlib.Path(protovalidate.__file__).parent / "_gen/buf/validate/validate_pb.py"
    for node in ast.walk(ast.parse(src.read_text())):
        value = node.value if isinstance(node, ast.Constant) else None
        if isinstance(value, bytes) and value.startswith(b"\n\x1bbuf/validate/validate.proto"):
            return value
    raise SystemExit(f"no embedded descriptor found in {src}")


class Printer:
    def __init__(self, fd: descriptor_pb2.FileDescriptorProto, pool: descriptor_pool.DescriptorPool) -> None:
        self.fd = fd
        self.pool = pool
        self.out: list[str] = []

    def options(self, opts: object, type_name: str) -> list[str]:
        """Render an options message as `name = value` items, extensions in aggregate form."""
        cls = message_factory.GetMessageClass(self.pool.FindMessageTypeByName(type_name))
        parsed = cls.FromString(opts.SerializeToString())  # type: ignore[attr-defined]
        items = []
        for field, value in parsed.ListFields():
            name = f"({field.full_name})" if field.is_extension else field.name
            values = value if field.is_repeated else [value]
            for v in values:
                if field.type == field.TYPE_MESSAGE:
                    body = text_format.MessageToString(v, as_one_line=True)
                    items.append(f"{name} = {{{body}}}")
                elif field.type == field.TYPE_STRING:
                    items.append(f'{name} = "{text_encoding.CEscape(v, as_utf8=True)}"')
                elif field.type == field.TYPE_BOOL:
                    items.append(f"{name} = {'true' if v else 'false'}")
                elif field.type == field.TYPE_ENUM:
                    items.append(f"{name} = {field.enum_type.values_by_number[v].name}")
                else:
                    items.append(f"{name} = {v}")
        return items

    def type_of(self, f: descriptor_pb2.FieldDescriptorProto) -> str:
        if f.type in _SCALARS:
            return _SCALARS[f.type]
        return f.type_name  # fully qualified with a leading dot: always resolvable

    def field(self, f: descriptor_pb2.FieldDescriptorProto, indent: str, label: bool = True) -> None:
        opts = self.options(f.options, "google.protobuf.FieldOptions") if f.HasField("options") else []
        if f.HasField("default_value"):
            dv = f.default_value if f.type != F.TYPE_STRING else f'"{f.default_value}"'
            opts.insert(0, f"default = {dv}")
        suffix = f" [{', '.join(opts)}]" if opts else ""
        lab = f"{_LABELS[f.label]} " if label else ""
        self.out.append(f"{indent}{lab}{self.type_of(f)} {f.name} = {f.number}{suffix};")

    def enum(self, e: descriptor_pb2.EnumDescriptorProto, indent: str) -> None:
        self.out.append(f"{indent}enum {e.name} {{")
        for o in self.options(e.options, "google.protobuf.EnumOptions") if e.HasField("options") else []:
            self.out.append(f"{indent}  option {o};")
        for v in e.value:
            vo = self.options(v.options, "google.protobuf.EnumValueOptions") if v.HasField("options") else []
            suffix = f" [{', '.join(vo)}]" if vo else ""
            self.out.append(f"{indent}  {v.name} = {v.number}{suffix};")
        for r in e.reserved_range:
            self.out.append(f"{indent}  reserved {r.start} to {r.end};")
        for n in e.reserved_name:
            self.out.append(f'{indent}  reserved "{n}";')
        self.out.append(f"{indent}}}")

    def message(self, m: descriptor_pb2.DescriptorProto, indent: str) -> None:
        self.out.append(f"{indent}message {m.name} {{")
        inner = indent + "  "
        for o in self.options(m.options, "google.protobuf.MessageOptions") if m.HasField("options") else []:
            self.out.append(f"{inner}option {o};")
        for e in m.enum_type:
            self.enum(e, inner)
        for n in m.nested_type:
            self.message(n, inner)
        done_oneofs: set[int] = set()
        for f in m.field:
            if f.HasField("oneof_index") and not f.proto3_optional:
                idx = f.oneof_index
                if idx in done_oneofs:
                    continue
                done_oneofs.add(idx)
                od = m.oneof_decl[idx]
                self.out.append(f"{inner}oneof {od.name} {{")
                if od.HasField("options"):
                    for o in self.options(od.options, "google.protobuf.OneofOptions"):
                        self.out.append(f"{inner}  option {o};")
                for g in m.field:
                    if g.HasField("oneof_index") and g.oneof_index == idx:
                        self.field(g, inner + "  ", label=False)
                self.out.append(f"{inner}}}")
            else:
                self.field(f, inner)
        for r in m.extension_range:
            end = "max" if r.end >= 536870912 else str(r.end - 1)
            self.out.append(f"{inner}extensions {r.start} to {end};")
        for r in m.reserved_range:
            self.out.append(f"{inner}reserved {r.start} to {r.end - 1};")
        for n in m.reserved_name:
            self.out.append(f'{inner}reserved "{n}";')
        self.extensions(m.extension, inner)
        self.out.append(f"{indent}}}")

    def extensions(self, exts: list[descriptor_pb2.FieldDescriptorProto], indent: str) -> None:
        by_extendee: dict[str, list[descriptor_pb2.FieldDescriptorProto]] = {}
        for x in exts:
            by_extendee.setdefault(x.extendee, []).append(x)
        for extendee, fields in by_extendee.items():
            self.out.append(f"{indent}extend {extendee} {{")
            for x in fields:
                self.field(x, indent + "  ")
            self.out.append(f"{indent}}}")

    def render(self) -> str:
        fd = self.fd
        edition = fd.syntax or "proto2"
        self.out.append(
            "// GENERATED by tools/vendor_validate_proto.py from the protovalidate wheel. DO NOT EDIT."
        )
        self.out.append(f'syntax = "{edition}";')
        self.out.append(f"package {fd.package};")
        for dep in fd.dependency:
            self.out.append(f'import "{dep}";')
        for o in self.options(fd.options, "google.protobuf.FileOptions"):
            self.out.append(f"option {o};")
        self.extensions(list(fd.extension), "")
        for e in fd.enum_type:
            self.enum(e, "")
        for m in fd.message_type:
            self.message(m, "")
        return "\n".join(self.out) + "\n"


def main() -> None:
    fd = descriptor_pb2.FileDescriptorProto.FromString(_serialized_descriptor())
    pool = descriptor_pool.DescriptorPool()
    for mod in (descriptor_pb2, duration_pb2, field_mask_pb2, timestamp_pb2):
        dep = descriptor_pb2.FileDescriptorProto()
        mod.DESCRIPTOR.CopyToProto(dep)
        pool.Add(dep)
    pool.Add(fd)
    target = pathlib.Path(
        sys.argv[1] if len(sys.argv) > 1 else "protos/third_party/buf/validate/validate.proto"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(Printer(fd, pool).render())
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
