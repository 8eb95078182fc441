#!/usr/bin/env python3
"""Reads the whole register map of linesim's Modbus TCP server with pymodbus.

Usage:
  modbus_client.py --host 127.0.0.1 --port 5020 --map modbus_map.toml --expected expected.json

--map       the register map (`linesim map modbus`, gateway [[tag]] syntax)
--expected  JSON object {tag name: engineering value} the server should serve

For every unit and table of the map it reads the whole mapped span (0 to the end
of the last tag) in as few requests as possible (<= 125 registers / 2000 bits),
decodes every tag as the map says (type, word order, bit, scale, offset) and
compares it with the expected value: exact for integers and booleans, scale/2
for scaled integers, f32 precision for f32. Then it checks the exceptions: a
read past the span answers 2, writes answer 1, an unknown unit answers 11, and
(over a raw socket, since pymodbus checks counts itself) a count of 0 or 126
registers answers 3.

Needs Python 3.11+ (tomllib) and pymodbus 3.x. Exits non-zero on any failure.
"""

import argparse
import json
import math
import socket
import struct
import sys
import tomllib

try:
    from pymodbus.client import ModbusTcpClient
    from pymodbus.exceptions import ModbusException
except ImportError:
    print("FAIL: the Python package pymodbus is missing: python3 -m pip install pymodbus", file=sys.stderr)
    sys.exit(2)

MAX_REGS = 125
MAX_BITS = 2000
WIDTH = {"u16": 1, "i16": 1, "bool": 1, "u32": 2, "i32": 2, "f32": 2, "u64": 4, "i64": 4, "f64": 4}
STRUCT = {"u16": ">H", "i16": ">h", "u32": ">I", "i32": ">i", "f32": ">f", "u64": ">Q", "i64": ">q", "f64": ">d"}
BIT_TABLES = ("coil", "discrete")

failures = []


def fail(msg):
    failures.append(msg)
    print(f"FAIL: {msg}", file=sys.stderr)


def read(client, unit, table, address, count):
    """One read request; returns the response (registers or bits)."""
    if table == "coil":
        return client.read_coils(address, count=count, device_id=unit)
    if table == "discrete":
        return client.read_discrete_inputs(address, count=count, device_id=unit)
    if table == "holding":
        return client.read_holding_registers(address, count=count, device_id=unit)
    return client.read_input_registers(address, count=count, device_id=unit)


def read_span(client, unit, table, span):
    """Reads addresses 0..span in chunks; returns (values, number of requests)."""
    step = MAX_BITS if table in BIT_TABLES else MAX_REGS
    values = []
    requests = 0
    for start in range(0, span, step):
        count = min(step, span - start)
        rr = read(client, unit, table, start, count)
        requests += 1
        if rr.isError():
            raise RuntimeError(f"unit {unit} {table} {start}+{count}: exception {rr.exception_code}")
        chunk = list(rr.bits[:count]) if table in BIT_TABLES else list(rr.registers)
        if len(chunk) != count:
            raise RuntimeError(f"unit {unit} {table} {start}+{count}: got {len(chunk)} values")
        values.extend(chunk)
    return values, requests


def decode(words, typ, order):
    """Decodes the registers of one value; order names the bytes of a 32-bit value on the wire."""
    if order in ("CDAB", "DCBA"):
        words = list(reversed(words))
    if order in ("BADC", "DCBA"):
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    raw = b"".join(struct.pack(">H", w) for w in words)
    return struct.unpack(STRUCT[typ], raw)[0]


def check_tag(tag, values, expected):
    name = tag["name"]
    a = tag["address"]
    typ = a.get("type", "bool" if a["table"] in BIT_TABLES else "u16")
    reg = a["register"]
    if name not in expected:
        fail(f"{name}: no expected value in the JSON file")
        return
    want = expected[name]
    if typ == "bool":
        got = bool(values[reg]) if "bit" not in a else bool((values[reg] >> a["bit"]) & 1)
        if got != want:
            fail(f"{name}: read {got}, expected {want}")
        return
    words = values[reg : reg + WIDTH[typ]]
    raw = decode(words, typ, a.get("order", "ABCD"))
    scale = a.get("scale")
    offset = a.get("offset")
    value = raw * (scale if scale is not None else 1) + (offset if offset is not None else 0)
    if tag.get("value_type", "f64") == "i64":
        if not isinstance(value, int) or value != want:
            fail(f"{name}: read {value!r} (words {words}), expected {want!r}")
        return
    if typ == "f32":
        tol = abs(want) * 2.0**-23 * 1.01 + 1e-12
    elif typ == "f64":
        tol = abs(want) * 1e-12
    elif scale is not None:
        tol = abs(scale) / 2 + 1e-9
    else:
        tol = 0
    if not math.isfinite(float(value)) or abs(float(value) - float(want)) > tol:
        fail(f"{name}: read {value!r} (words {words}, {typ} {a.get('order', 'ABCD')}), expected {want!r} +- {tol}")


def expect_exception(what, rr, code):
    if not rr.isError():
        fail(f"{what}: answered {rr}, expected exception {code}")
    elif rr.exception_code != code:
        fail(f"{what}: exception {rr.exception_code}, expected {code}")


def raw_request(host, port, unit, pdu, timeout):
    """Sends one request PDU over a plain socket; returns the response PDU."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(struct.pack(">HHHB", 0x1234, 0, len(pdu) + 1, unit) + pdu)
        head = b""
        while len(head) < 7:
            part = s.recv(7 - len(head))
            if not part:
                raise RuntimeError("connection closed")
            head += part
        tid, proto, length, runit = struct.unpack(">HHHB", head)
        body = b""
        while len(body) < length - 1:
            part = s.recv(length - 1 - len(body))
            if not part:
                raise RuntimeError("connection closed")
            body += part
        if tid != 0x1234 or proto != 0 or runit != unit:
            raise RuntimeError(f"bad MBAP header {head.hex()}")
        return body


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--map", required=True, help="register map TOML ([[tag]] tables)")
    ap.add_argument("--expected", required=True, help="JSON {tag name: value}")
    ap.add_argument("--timeout", type=float, default=3.0)
    args = ap.parse_args()

    with open(args.map, "rb") as f:
        tags = tomllib.load(f).get("tag", [])
    with open(args.expected, encoding="utf-8") as f:
        expected = json.load(f)
    if not tags:
        print("FAIL: the map has no [[tag]] tables", file=sys.stderr)
        return 1

    # Mapped span of every unit and table.
    spans = {}
    for t in tags:
        a = t["address"]
        typ = a.get("type", "bool" if a["table"] in BIT_TABLES else "u16")
        key = (a["unit"], a["table"])
        spans[key] = max(spans.get(key, 0), a["register"] + WIDTH[typ])

    client = ModbusTcpClient(args.host, port=args.port, timeout=args.timeout, retries=0)
    if not client.connect():
        print(f"FAIL: cannot connect to {args.host}:{args.port}", file=sys.stderr)
        return 1
    try:
        images = {}
        total_requests = 0
        for key in sorted(spans):
            unit, table = key
            try:
                images[key], n = read_span(client, unit, table, spans[key])
                total_requests += n
            except (RuntimeError, ModbusException) as e:
                fail(f"reading unit {unit} {table} 0..{spans[key]}: {e}")
        for t in tags:
            key = (t["address"]["unit"], t["address"]["table"])
            if key in images:
                check_tag(t, images[key], expected)

        # Exceptions.
        for (unit, table), span in sorted(spans.items()):
            expect_exception(f"unit {unit} {table} read at {span} (past the span)", read(client, unit, table, span, 1), 2)
            expect_exception(
                f"unit {unit} {table} read {span - 1}+2 (across the end)", read(client, unit, table, span - 1, 2), 2
            )
        units = sorted({u for u, _ in spans})
        for unit in units:
            expect_exception(f"unit {unit} write register (FC6)", client.write_register(0, 1, device_id=unit), 1)
            expect_exception(f"unit {unit} write registers (FC16)", client.write_registers(0, [1, 2], device_id=unit), 1)
            expect_exception(f"unit {unit} write coil (FC5)", client.write_coil(0, True, device_id=unit), 1)
            expect_exception(f"unit {unit} write coils (FC15)", client.write_coils(0, [True], device_id=unit), 1)
        unknown = next(u for u in range(247, 0, -1) if u not in units)
        expect_exception(f"unknown unit {unknown}", client.read_holding_registers(0, count=1, device_id=unknown), 11)
    except ModbusException as e:
        fail(f"modbus error: {e}")
    finally:
        client.close()

    # Quantities pymodbus refuses to send: over a raw socket.
    unit, table = next(k for k in sorted(spans) if k[1] == "input")
    for count in (0, 126):
        try:
            pdu = raw_request(args.host, args.port, unit, struct.pack(">BHH", 4, 0, count), args.timeout)
            if pdu != bytes([0x84, 3]):
                fail(f"read of {count} input registers: answered {pdu.hex()}, expected 8403 (exception 3)")
        except (OSError, RuntimeError) as e:
            fail(f"read of {count} input registers over a raw socket: {e}")

    if failures:
        print(f"FAILED: {len(failures)} problem(s)", file=sys.stderr)
        return 1
    summary = ", ".join(f"unit {u} {t} {spans[(u, t)]}" for u, t in sorted(spans))
    print(f"OK: {len(tags)} tags in {total_requests} read requests ({summary}); exceptions 1, 2, 3, 11 as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
