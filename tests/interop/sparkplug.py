"""Sparkplug B message classes built at run time from sparkplug_b.proto.

No protoc is needed: the .proto file (proto2, the subset it uses: nested
messages, optional/repeated fields, oneofs, extension ranges, comments) is
parsed here into a FileDescriptorProto, and the protobuf runtime (pip package
`protobuf`) makes the classes, so decoding is done by the real protobuf
library with the schema's field numbers and types.

    from sparkplug import load
    Payload = load()            # the Payload class
    p = Payload.FromString(data)
"""

import os
import re

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

F = descriptor_pb2.FieldDescriptorProto
SCALARS = {
    "double": F.TYPE_DOUBLE,
    "float": F.TYPE_FLOAT,
    "int64": F.TYPE_INT64,
    "uint64": F.TYPE_UINT64,
    "int32": F.TYPE_INT32,
    "fixed64": F.TYPE_FIXED64,
    "fixed32": F.TYPE_FIXED32,
    "bool": F.TYPE_BOOL,
    "string": F.TYPE_STRING,
    "bytes": F.TYPE_BYTES,
    "uint32": F.TYPE_UINT32,
    "sfixed32": F.TYPE_SFIXED32,
    "sfixed64": F.TYPE_SFIXED64,
    "sint32": F.TYPE_SINT32,
    "sint64": F.TYPE_SINT64,
}
MAX_FIELD = 536870912  # exclusive end of "to max" (field numbers go up to 2^29 - 1)
TOKEN = re.compile(r'\s*(?:([A-Za-z_][\w.]*)|(\d+)|("[^"]*")|(\S))')


class ProtoError(Exception):
    pass


def _tokens(text):
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    pos, out = 0, []
    while pos < len(text):
        m = TOKEN.match(text, pos)
        if not m or m.end() == pos:
            break
        out.append(next(g for g in m.groups() if g is not None))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, toks):
        self.toks, self.i = toks, 0

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else None

    def next(self):
        t = self.peek()
        if t is None:
            raise ProtoError("unexpected end of file")
        self.i += 1
        return t

    def expect(self, want):
        t = self.next()
        if t != want:
            raise ProtoError(f"expected {want!r}, got {t!r}")

    def file(self, fdp):
        while self.peek() is not None:
            t = self.next()
            if t == "syntax":
                self.expect("=")
                fdp.syntax = self.next().strip('"')
                self.expect(";")
            elif t == "package":
                fdp.package = self.next()
                self.expect(";")
            elif t == "message":
                self.message(fdp.message_type.add())
            else:
                raise ProtoError(f"unsupported top-level statement {t!r}")

    def message(self, msg):
        msg.name = self.next()
        self.expect("{")
        while (t := self.next()) != "}":
            if t == "message":
                self.message(msg.nested_type.add())
            elif t == "extensions":
                start = int(self.next())
                self.expect("to")
                end = self.next()
                self.expect(";")
                r = msg.extension_range.add()
                r.start, r.end = start, MAX_FIELD if end == "max" else int(end) + 1
            elif t == "oneof":
                index = len(msg.oneof_decl)
                msg.oneof_decl.add().name = self.next()
                self.expect("{")
                while self.peek() != "}":
                    self.field(msg, F.LABEL_OPTIONAL, self.next(), index)
                self.expect("}")
            elif t in ("optional", "repeated", "required"):
                label = {"optional": F.LABEL_OPTIONAL, "repeated": F.LABEL_REPEATED, "required": F.LABEL_REQUIRED}[t]
                self.field(msg, label, self.next(), None)
            else:
                raise ProtoError(f"unsupported statement {t!r} in message {msg.name}")

    def field(self, msg, label, type_name, oneof_index):
        f = msg.field.add()
        f.name = self.next()
        self.expect("=")
        f.number = int(self.next())
        self.expect(";")
        f.label = label
        if type_name in SCALARS:
            f.type = SCALARS[type_name]
        else:
            f.type_name = type_name  # resolved later
        if oneof_index is not None:
            f.oneof_index = oneof_index


def _resolve(fdp):
    """Turns relative message type names into fully qualified ones (protobuf scoping)."""
    known = set()

    def collect(msgs, scope):
        for m in msgs:
            full = f"{scope}.{m.name}"
            known.add(full)
            collect(m.nested_type, full)

    root = "." + fdp.package if fdp.package else ""
    collect(fdp.message_type, root)

    def fix(msgs, scope):
        for m in msgs:
            full = f"{scope}.{m.name}"
            for f in m.field:
                if f.type_name and not f.type_name.startswith("."):
                    parts = full.split(".")
                    for k in range(len(parts), 0, -1):
                        cand = ".".join(parts[:k]) + "." + f.type_name
                        if cand in known:
                            f.type_name = cand
                            f.type = F.TYPE_MESSAGE
                            break
                    else:
                        raise ProtoError(f"unknown type {f.type_name!r} in {full}")
            fix(m.nested_type, full)

    fix(fdp.message_type, root)


def file_descriptor(path):
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    fdp = descriptor_pb2.FileDescriptorProto()
    fdp.name = os.path.basename(path)
    _Parser(_tokens(text)).file(fdp)
    if fdp.syntax != "proto2":
        raise ProtoError(f"expected a proto2 schema, got {fdp.syntax!r}")
    _resolve(fdp)
    return fdp


def load(path=None):
    """The Payload message class of the Sparkplug B schema."""
    path = path or os.path.join(os.path.dirname(os.path.abspath(__file__)), "sparkplug_b.proto")
    fdp = file_descriptor(path)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    desc = pool.FindMessageTypeByName(f"{fdp.package}.Payload")
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(desc)
    return message_factory.MessageFactory(pool).GetPrototype(desc)


# Metric datatypes (Sparkplug B v3.0).
INT64 = 4
DOUBLE = 10
BOOLEAN = 11
