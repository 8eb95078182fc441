#!/usr/bin/env python3
"""Interop check of linesim's MQTT side with independent clients: paho-mqtt
(2.x) subscribes to the line's topics and the real protobuf runtime decodes
the Sparkplug B payloads (schema: sparkplug_b.proto, see sparkplug.py).

    python3 tests/interop/mqtt_client.py --port 1883 --expected expected.json [--seconds 6] [--require-wrap]

The expected file (written by simulators/tests/mqtt.rs) holds:
  "json_topics": {topic: [field, ...]},
  "devices":     {device: {metric: {"alias": n, "datatype": n}}},
  "frames":      {ts_ms: {"json": {topic: {field: value}}, "sparkplug": {alias: value}}}
Values are checked against the frame of the message's (or metric's) timestamp.

Checks: every JSON topic delivers JSON objects with an RFC 3339 `ts`, its
`ts_ms` and numeric fields equal to the frame's; a rebirth request (NCMD
`Node Control/Rebirth` = true) is answered by an NBIRTH (seq 0, bdSeq Int64,
the rebirth metric) and a DBIRTH per device with every metric by name, alias,
datatype and value; DDATA carry known aliases only (no names), never resend an
unchanged sample, and seq counts up by one (mod 256) over all node messages.
A second rebirth request gets a second NBIRTH with the same bdSeq.
Exits 0 on success, 1 with the failures listed otherwise.

Packages: pip install paho-mqtt protobuf
"""

import argparse
import json
import queue
import re
import sys
import threading
import time
from datetime import datetime, timezone

sys.dont_write_bytecode = True  # no __pycache__ beside the scripts

try:
    import paho.mqtt.client as mqtt
except ImportError:
    sys.exit("FAIL: the Python package paho-mqtt is missing: python3 -m pip install paho-mqtt")
try:
    import sparkplug
except ImportError as e:
    sys.exit(f"FAIL: cannot load the Sparkplug schema ({e}): python3 -m pip install protobuf")

GROUP, NODE = "line1", "energy"
NCMD = f"spBv1.0/{GROUP}/NCMD/{NODE}"
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class Failures:
    def __init__(self):
        self.items = []

    def __call__(self, msg):
        if len(self.items) < 50:
            self.items.append(msg)
        elif len(self.items) == 50:
            self.items.append("... (more failures left out)")


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def rebirth_payload(Payload):
    p = Payload(timestamp=int(time.time() * 1000))
    m = p.metrics.add()
    m.name = "Node Control/Rebirth"
    m.datatype = sparkplug.BOOLEAN
    m.boolean_value = True
    return p.SerializeToString()


def collect(args, Payload):
    """Subscribes, asks for two rebirths, and returns [(arrival, topic, payload)]."""
    msgs = queue.Queue()
    subscribed = threading.Event()
    connect_error = []

    def on_connect(client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            connect_error.append(str(reason_code))
            subscribed.set()
            return
        client.subscribe([("plant/line1/#", 0), (f"spBv1.0/{GROUP}/#", 0)])

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        subscribed.set()

    def on_message(client, userdata, msg):
        msgs.put((time.monotonic(), msg.topic, bytes(msg.payload)))

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id="linesim-interop", protocol=mqtt.MQTTv311, clean_session=True
    )
    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    try:
        client.connect(args.host, args.port, keepalive=30)
    except OSError as e:
        sys.exit(f"FAIL: cannot connect to the broker at {args.host}:{args.port}: {e}")
    client.loop_start()
    try:
        if not subscribed.wait(10) or connect_error:
            sys.exit(f"FAIL: no CONNACK/SUBACK from the broker ({connect_error or 'timeout'})")
        marks = {"rebirth1": time.monotonic()}
        client.publish(NCMD, rebirth_payload(Payload), qos=1).wait_for_publish(5)
        time.sleep(args.seconds)
        marks["rebirth2"] = time.monotonic()
        client.publish(NCMD, rebirth_payload(Payload), qos=1).wait_for_publish(5)
        time.sleep(2)
    finally:
        client.disconnect()
        client.loop_stop()
    out = []
    while not msgs.empty():
        out.append(msgs.get())
    return out, marks


def check_json(msgs, expected, fail):
    topics = expected["json_topics"]
    frames = expected["frames"]
    counts = {t: 0 for t in topics}
    compared = 0
    for _, topic, payload in msgs:
        if not topic.startswith("plant/"):
            continue
        if topic not in topics:
            fail(f"JSON: unexpected topic {topic}")
            continue
        counts[topic] += 1
        try:
            obj = json.loads(payload)
        except ValueError as e:
            fail(f"JSON: {topic}: invalid JSON ({e}): {payload[:80]!r}")
            continue
        if not isinstance(obj, dict):
            fail(f"JSON: {topic}: not an object")
            continue
        want_keys = {"ts", "ts_ms", *topics[topic]}
        if set(obj) != want_keys:
            fail(f"JSON: {topic}: keys {sorted(obj)} != {sorted(want_keys)}")
            continue
        ts, ts_ms = obj["ts"], obj["ts_ms"]
        if not isinstance(ts_ms, int) or isinstance(ts_ms, bool):
            fail(f"JSON: {topic}: ts_ms {ts_ms!r} is not an integer")
            continue
        if not isinstance(ts, str) or not RFC3339_MS.match(ts):
            fail(f"JSON: {topic}: ts {ts!r} is not RFC 3339 UTC with milliseconds")
            continue
        parsed = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        if parsed.tzinfo != timezone.utc or round(parsed.timestamp() * 1000) != ts_ms:
            fail(f"JSON: {topic}: ts {ts} does not match ts_ms {ts_ms}")
        for field in topics[topic]:
            if not is_number(obj[field]):
                fail(f"JSON: {topic}: {field} = {obj[field]!r} is not a number")
        frame = frames.get(str(ts_ms))
        if frame is not None:
            want = frame["json"][topic]
            got = {f: obj[f] for f in topics[topic]}
            if got != want:
                fail(f"JSON: {topic} at {ts}: {got} != expected {want}")
            compared += 1
    for t, n in counts.items():
        if n < 2:
            fail(f"JSON: topic {t} delivered {n} messages (want at least 2)")
    return sum(counts.values()), compared


def metric_value(m):
    kind = m.WhichOneof("value")
    return None if kind is None else getattr(m, kind)


def check_sparkplug(msgs, expected, marks, Payload, fail, require_wrap):
    devices = expected["devices"]
    frames = expected["frames"]
    alias_of = {d: {name: spec["alias"] for name, spec in ms.items()} for d, ms in devices.items()}
    stats = {"nbirth": 0, "dbirth": 0, "ddata": 0, "values": 0, "wraps": 0, "ndeath": 0}
    bd_seqs = []
    nbirth_times = []
    expect_seq = None
    born = set()
    sent = set()  # (alias, timestamp) published in DDATA

    def check_value(where, alias, m):
        frame = frames.get(str(m.timestamp)) if m.HasField("timestamp") else None
        if frame is None:
            return
        want = frame["sparkplug"].get(str(alias))
        got = metric_value(m)
        if got != want:
            fail(f"{where}: alias {alias} at {m.timestamp}: {got!r} != expected {want!r}")
        stats["values"] += 1

    for arrival, topic, raw in msgs:
        parts = topic.split("/")
        if len(parts) < 4 or parts[0] != "spBv1.0" or parts[1] != GROUP:
            continue
        kind, node = parts[2], parts[3]
        if kind in ("NCMD", "DCMD", "STATE") or node != NODE:
            continue  # our own rebirth requests
        try:
            p = Payload.FromString(raw)
        except Exception as e:  # noqa: BLE001 - any decode error is a failure
            fail(f"{topic}: undecodable Sparkplug payload: {e}")
            continue
        if kind == "NDEATH":
            stats["ndeath"] += 1
            continue
        if kind != "NBIRTH" and expect_seq is None:
            continue  # before the first birth we see: aliases unknown yet
        if not p.HasField("timestamp"):
            fail(f"{topic}: payload without timestamp")
        if not p.HasField("seq"):
            fail(f"{topic}: payload without seq")
            continue
        if kind == "NBIRTH":
            stats["nbirth"] += 1
            nbirth_times.append(arrival)
            if p.seq != 0:
                fail(f"NBIRTH: seq {p.seq} != 0")
            ms = {m.name: m for m in p.metrics}
            bd = ms.get("bdSeq")
            if bd is None or bd.datatype != sparkplug.INT64 or bd.WhichOneof("value") != "long_value":
                fail(f"NBIRTH: no Int64 bdSeq metric: {p}")
            else:
                bd_seqs.append(bd.long_value)
            rb = ms.get("Node Control/Rebirth")
            if rb is None or rb.datatype != sparkplug.BOOLEAN or metric_value(rb) is not False:
                fail("NBIRTH: no 'Node Control/Rebirth' Boolean false metric")
            born = set()
            expect_seq = 1
            continue
        if p.seq != expect_seq:
            fail(f"{topic}: seq {p.seq} != expected {expect_seq}")
        elif p.seq == 0:
            stats["wraps"] += 1
        expect_seq = (p.seq + 1) % 256
        if len(parts) != 5 or parts[4] not in devices:
            fail(f"{topic}: unknown device")
            continue
        dev = parts[4]
        if kind == "DBIRTH":
            stats["dbirth"] += 1
            born.add(dev)
            names = {m.name for m in p.metrics}
            if names != set(devices[dev]):
                fail(f"DBIRTH {dev}: metrics {sorted(names)} != {sorted(devices[dev])}")
            for m in p.metrics:
                spec = devices[dev].get(m.name)
                if spec is None:
                    continue
                if not m.HasField("alias") or m.alias != spec["alias"]:
                    fail(f"DBIRTH {dev}: {m.name} alias {m.alias if m.HasField('alias') else None} != {spec['alias']}")
                if not m.HasField("datatype") or m.datatype != spec["datatype"]:
                    fail(f"DBIRTH {dev}: {m.name} datatype {m.datatype} != {spec['datatype']}")
                if metric_value(m) is None:
                    fail(f"DBIRTH {dev}: {m.name} without a value")
                check_value(f"DBIRTH {dev}", spec["alias"], m)
        elif kind == "DDATA":
            stats["ddata"] += 1
            if dev not in born:
                fail(f"DDATA {dev} before its DBIRTH")
            if not p.metrics:
                fail(f"DDATA {dev}: no metrics")
            for m in p.metrics:
                if m.HasField("name"):
                    fail(f"DDATA {dev}: metric carries a name ({m.name}); DATA messages use aliases")
                if not m.HasField("alias") or m.alias not in alias_of[dev].values():
                    fail(f"DDATA {dev}: unknown alias {m.alias if m.HasField('alias') else None}")
                    continue
                if metric_value(m) is None or not m.HasField("timestamp"):
                    fail(f"DDATA {dev}: alias {m.alias} without value or timestamp")
                    continue
                key = (m.alias, m.timestamp)
                if key in sent:
                    fail(f"DDATA {dev}: alias {m.alias} resent for the unchanged sample at {m.timestamp}")
                sent.add(key)
                check_value(f"DDATA {dev}", m.alias, m)
        else:
            fail(f"{topic}: unexpected message type {kind}")

    if stats["nbirth"] < 2:
        fail(f"Sparkplug: {stats['nbirth']} NBIRTH seen, want one per rebirth request (2)")
    elif not any(t >= marks["rebirth2"] for t in nbirth_times):
        fail("Sparkplug: no NBIRTH after the second rebirth request")
    if len(set(bd_seqs)) > 1:
        fail(f"Sparkplug: bdSeq changed between rebirths of one session: {bd_seqs}")
    if stats["dbirth"] < stats["nbirth"] * len(devices):
        fail(f"Sparkplug: {stats['dbirth']} DBIRTH for {stats['nbirth']} NBIRTH and {len(devices)} devices")
    if stats["ddata"] < 10:
        fail(f"Sparkplug: only {stats['ddata']} DDATA")
    if stats["values"] == 0:
        fail("Sparkplug: no metric value could be compared with the expected frames")
    if require_wrap and stats["wraps"] == 0:
        fail("Sparkplug: seq never wrapped from 255 to 0 (too few messages between births?)")
    return stats, bd_seqs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--expected", required=True, help="JSON file of expected topics, metrics and frame values")
    ap.add_argument("--seconds", type=float, default=6.0, help="how long to listen after the first rebirth")
    ap.add_argument("--require-wrap", action="store_true", help="fail unless seq wrapped from 255 to 0")
    args = ap.parse_args()
    try:
        with open(args.expected, encoding="utf-8") as fh:
            expected = json.load(fh)
    except (OSError, ValueError) as e:
        sys.exit(f"FAIL: cannot read the expected values {args.expected}: {e}")
    Payload = sparkplug.load()
    msgs, marks = collect(args, Payload)
    fail = Failures()
    n_json, n_cmp = check_json(msgs, expected, fail)
    stats, bd_seqs = check_sparkplug(msgs, expected, marks, Payload, fail, args.require_wrap)
    if fail.items:
        print(f"FAIL: {len(fail.items)} problem(s) in {len(msgs)} messages:")
        for f in fail.items:
            print(f"  - {f}")
        return 1
    print(
        f"OK: {len(msgs)} messages; JSON {n_json} ({n_cmp} compared with the expected frames); "
        f"Sparkplug NBIRTH {stats['nbirth']} (bdSeq {sorted(set(bd_seqs))}), DBIRTH {stats['dbirth']}, "
        f"DDATA {stats['ddata']}, {stats['values']} metric values compared, seq wrapped {stats['wraps']}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
