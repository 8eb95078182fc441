#!/usr/bin/env python3
"""Interop test of linesim's OPC UA server with an independent client (asyncua).

Usage:
  opcua_client.py --url opc.tcp://127.0.0.1:PORT/ --expected EXPECTED.json
                  [--quick | --expect-drop | --expect-rejected]

EXPECTED.json (written by simulators/tests/opcua.rs from the tag catalog):
  {"namespace": ..., "application_uri": ..., "port": ...,
   "user": ..., "password": ...,
   "tags": [{"node_id", "path", "browse", "description", "unit", "unit_id",
             "data_type", "plc_type", "value", "source_ts_ms", "dynamic"}, ...]}
Tags with "dynamic": true keep changing while the test runs (their values are
not compared); the others hold "value" with source timestamp "source_ts_ms".

Checks (all of them unless --quick, which runs only 2 and 5):
  1. GetEndpoints: the advertised URLs carry the actual port; None, Basic256Sha256
     Sign and SignAndEncrypt are offered; the application URI is right.
  2. Anonymous on the None endpoint: browse Objects/Line1, every expected variable
     exists with its NodeId, browse name, display name, description, data type,
     read-only access level, EngineeringUnits; values, status and source
     timestamps are as expected.
  3. A write is refused (variables are read-only).
  4. Username/password on the None endpoint, and on Basic256Sha256 Sign and
     SignAndEncrypt with a self-signed client certificate, read values; a wrong
     password is refused.
  5. A subscription on the dynamic tags (queue size 10) sees at least 2 data changes each.
  --expect-drop: connect, print READY, pass once the server drops the connection
  (the caller then starts a comms-loss fault).
  --expect-rejected: pass when anonymous logins and an untrusted client
  certificate are refused (a server with anonymous = false, trust_client_certs = false).
Exits 0 when everything passed, 1 with a message on the first failure.
"""

import argparse
import asyncio
import json
import math
import struct
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

try:
    from asyncua import Client, ua
    from asyncua.crypto import security_policies
except ImportError as e:  # pragma: no cover - environment problem
    print(f"FAIL: python package asyncua is missing ({e}); install it with: python3 -m pip install asyncua")
    sys.exit(2)

TIMEOUT = 15
B256 = "http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256"
NONE = "http://opcfoundation.org/UA/SecurityPolicy#None"


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def same_value(tag, got):
    want = tag["value"]
    ty = tag["plc_type"]
    if ty == "bool":
        return isinstance(got, bool) and got == want
    if ty in ("u16", "i16", "u32", "i32"):
        return isinstance(got, int) and not isinstance(got, bool) and got == want
    if ty == "f32":
        return isinstance(got, float) and math.isclose(got, f32(want), rel_tol=1e-6, abs_tol=1e-6)
    return isinstance(got, float) and math.isclose(got, want, rel_tol=1e-3, abs_tol=1e-9)


def ms(dt):
    return round(dt.timestamp() * 1000)


async def check_endpoints(url, exp):
    client = Client(url, timeout=TIMEOUT)
    endpoints = await client.connect_and_get_server_endpoints()
    check(endpoints, "GetEndpoints returned no endpoint")
    offered = set()
    for ep in endpoints:
        port = urlparse(ep.EndpointUrl).port
        check(port == exp["port"], f"endpoint {ep.EndpointUrl} advertises port {port}, the server listens on {exp['port']}")
        check(
            ep.Server.ApplicationUri == exp["application_uri"],
            f"application URI {ep.Server.ApplicationUri!r}, expected {exp['application_uri']!r}",
        )
        offered.add((ep.SecurityPolicyUri, ep.SecurityMode))
        kinds = {p.TokenType for p in ep.UserIdentityTokens}
        check(ua.UserTokenType.UserName in kinds, f"endpoint {ep.SecurityPolicyUri} {ep.SecurityMode} has no username login")
        check(ua.UserTokenType.Anonymous in kinds, f"endpoint {ep.SecurityPolicyUri} {ep.SecurityMode} has no anonymous login")
    for want in [
        (NONE, ua.MessageSecurityMode.None_),
        (B256, ua.MessageSecurityMode.Sign),
        (B256, ua.MessageSecurityMode.SignAndEncrypt),
    ]:
        check(want in offered, f"endpoint {want} is not offered (offered: {offered})")
    check(exp["application_uri"] != exp["namespace"], "application URI equals the namespace URI")
    print(f"ok: {len(endpoints)} endpoints, all on port {exp['port']}")
    return endpoints


async def browse_line(client, exp):
    """Browses Objects/Line1/<machine>/<tag>; returns {node_id: Node}."""
    ns = await client.get_namespace_index(exp["namespace"])
    check(ns > 0, f"namespace {exp['namespace']} has index {ns}")
    objects = client.nodes.objects
    line = None
    for ref in await objects.get_children_descriptions():
        if ref.BrowseName.Name == "Line1":
            line = client.get_node(ref.NodeId)
            check(ref.BrowseName.NamespaceIndex == ns, f"Line1 browse name in namespace {ref.BrowseName.NamespaceIndex}")
    check(line is not None, "Objects/Line1 not found")
    found = {}
    machines = {t["path"][1] for t in exp["tags"]}
    refs = await line.get_children_descriptions()
    names = {r.BrowseName.Name for r in refs}
    check(machines <= names, f"Line1 holds {sorted(names)}, expected the machines {sorted(machines)}")
    for r in refs:
        if r.BrowseName.Name not in machines:
            continue
        check(r.NodeClass == ua.NodeClass.Object, f"Line1/{r.BrowseName.Name} is a {r.NodeClass}, not an object")
        for v in await client.get_node(r.NodeId).get_children_descriptions():
            if v.NodeClass != ua.NodeClass.Variable:
                continue
            key = f"Line1/{r.BrowseName.Name}/{v.BrowseName.Name}"
            found[key] = (v, client.get_node(v.NodeId))
    return ns, found


async def read_both(node):
    """Reads the value with both timestamps (asyncua asks for the source one only by default)."""
    params = ua.ReadParameters()
    params.NodesToRead = [ua.ReadValueId(NodeId=node.nodeid, AttributeId=ua.AttributeIds.Value)]
    params.TimestampsToReturn = ua.TimestampsToReturn.Both
    return (await node.read_params(params))[0]


async def check_address_space(client, exp):
    ns, found = await browse_line(client, exp)
    static = 0
    for tag in exp["tags"]:
        path = "/".join(tag["path"])
        check(path in found, f"variable Objects/{path} not found by browsing")
        ref, node = found[path]
        where = f"{path}"
        check(
            ref.NodeId.Identifier == tag["node_id"] and ref.NodeId.NamespaceIndex == ns,
            f"{where}: NodeId {ref.NodeId.to_string()}, expected ns={ns};s={tag['node_id']}",
        )
        bn = await node.read_browse_name()
        check(bn.Name == tag["browse"] and bn.NamespaceIndex == ns, f"{where}: browse name {bn}, expected {ns}:{tag['browse']}")
        dn = await node.read_display_name()
        check(dn.Text == tag["browse"], f"{where}: display name {dn.Text!r}, expected {tag['browse']!r}")
        desc = await node.read_description()
        check(desc.Text == tag["description"], f"{where}: description {desc.Text!r}, expected {tag['description']!r}")
        dt = await node.read_data_type()
        want_dt = ua.NodeId(getattr(ua.ObjectIds, tag["data_type"]), 0)
        check(dt == want_dt, f"{where}: data type {dt.to_string()}, expected {tag['data_type']} ({want_dt.to_string()})")
        access = (await node.read_attribute(ua.AttributeIds.AccessLevel)).Value.Value
        user_access = (await node.read_attribute(ua.AttributeIds.UserAccessLevel)).Value.Value
        for name, a in (("AccessLevel", access), ("UserAccessLevel", user_access)):
            check(a & 1 == 1, f"{where}: {name} {a} lacks CurrentRead")
            check(a & 2 == 0, f"{where}: {name} {a} allows CurrentWrite")
        eu = None
        for p in await node.get_children_descriptions(refs=ua.ObjectIds.HasProperty):
            if p.BrowseName.Name == "EngineeringUnits":
                eu = await client.get_node(p.NodeId).read_value()
        if tag["unit"]:
            check(eu is not None, f"{where}: no EngineeringUnits property (unit {tag['unit']!r})")
            check(isinstance(eu, ua.EUInformation), f"{where}: EngineeringUnits is a {type(eu).__name__}, not EUInformation")
            check(eu.DisplayName.Text == tag["unit"], f"{where}: EU display name {eu.DisplayName.Text!r}, expected {tag['unit']!r}")
            check(eu.UnitId == tag["unit_id"], f"{where}: EU unit id {eu.UnitId}, expected {tag['unit_id']}")
        else:
            check(eu is None, f"{where}: EngineeringUnits on a tag without a unit")
        dv = await read_both(node)
        check(dv.StatusCode is None or dv.StatusCode.is_good(), f"{where}: status {dv.StatusCode}")
        check(dv.ServerTimestamp is not None, f"{where}: no server timestamp")
        if not tag["dynamic"]:
            got = dv.Value.Value
            check(same_value(tag, got), f"{where}: value {got!r} ({type(got).__name__}), expected {tag['value']!r} ({tag['plc_type']})")
            check(dv.SourceTimestamp is not None, f"{where}: no source timestamp")
            got_ts = ms(dv.SourceTimestamp)
            check(got_ts == tag["source_ts_ms"], f"{where}: source timestamp {got_ts} ms, expected {tag['source_ts_ms']} ms")
            static += 1
    extra = set(found) - {"/".join(t["path"]) for t in exp["tags"]}
    check(not extra, f"unexpected variables under Line1: {sorted(extra)}")
    print(f"ok: {len(exp['tags'])} variables browsed with their attributes; {static} values and source timestamps match")
    return found


async def check_values(client, exp):
    ns = await client.get_namespace_index(exp["namespace"])
    n = 0
    for tag in exp["tags"]:
        if tag["dynamic"]:
            continue
        node = client.get_node(ua.NodeId(tag["node_id"], ns))
        got = await node.read_value()
        check(same_value(tag, got), f"{tag['node_id']}: value {got!r}, expected {tag['value']!r}")
        n += 1
    return n


async def check_write_refused(client, exp):
    ns = await client.get_namespace_index(exp["namespace"])
    tag = next(t for t in exp["tags"] if t["plc_type"] == "f64")
    node = client.get_node(ua.NodeId(tag["node_id"], ns))
    try:
        await node.write_value(ua.DataValue(ua.Variant(1.0, ua.VariantType.Double)))
    except ua.UaStatusCodeError as e:
        print(f"ok: write refused ({type(e).__name__})")
        return
    raise Failure(f"{tag['node_id']}: a write was accepted by a read-only variable")


class Collector:
    def __init__(self):
        self.seen = {}

    def datachange_notification(self, node, val, data):
        dv = data.monitored_item.Value
        self.seen.setdefault(node.nodeid.to_string(), []).append((val, dv.SourceTimestamp))


async def check_subscription(client, exp):
    ns = await client.get_namespace_index(exp["namespace"])
    dynamic = [t for t in exp["tags"] if t["dynamic"]]
    check(dynamic, "the expected file names no dynamic tag")
    handler = Collector()
    sub = await client.create_subscription(100, handler)
    nodes = [client.get_node(ua.NodeId(t["node_id"], ns)) for t in dynamic]
    handles = await sub.subscribe_data_change(nodes, queuesize=10, sampling_interval=0)
    for t, h in zip(dynamic, handles):
        check(isinstance(h, int), f"{t['node_id']}: creating the monitored item failed: {h}")
    deadline = time.monotonic() + TIMEOUT
    keys = [ua.NodeId(t["node_id"], ns).to_string() for t in dynamic]

    def changes(k):
        vals = handler.seen.get(k, [])
        return sum(1 for a, b in zip(vals, vals[1:]) if a[0] != b[0])

    while time.monotonic() < deadline and any(changes(k) < 2 for k in keys):
        await asyncio.sleep(0.1)
    await sub.delete()
    for t, k in zip(dynamic, keys):
        vals = handler.seen.get(k, [])
        check(changes(k) >= 2, f"{t['node_id']}: {len(vals)} notifications ({changes(k)} changes) in {TIMEOUT} s: {vals}")
        stamps = [s for _, s in vals]
        check(all(s is not None for s in stamps), f"{t['node_id']}: notification without source timestamp")
        check(stamps == sorted(stamps), f"{t['node_id']}: source timestamps go backwards: {stamps}")
    print(f"ok: subscription saw >= 2 data changes on each of {len(keys)} dynamic variables")


def endpoint_url(endpoints, mode):
    for ep in endpoints:
        if ep.SecurityPolicyUri == B256 and ep.SecurityMode == mode:
            return ep.EndpointUrl
    raise Failure(f"no Basic256Sha256 {mode} endpoint")


async def secure_client(url, exp, mode, certs, password):
    client = Client(url, timeout=TIMEOUT)
    client.application_uri = "urn:linesim:interop-test-client"
    cert, key = await client.setup_self_signed_certificate(certs / "client_key.pem", certs / "client_cert.der")
    await client.set_security(security_policies.SecurityPolicyBasic256Sha256, str(cert), str(key), mode=mode)
    client.set_user(exp["user"])
    client.set_password(password)
    return client


async def check_secure(url, endpoints, exp):
    # Username login on the unsecured endpoint: the password is still encrypted
    # with the server certificate (the token policy names Basic256Sha256).
    client = Client(url, timeout=TIMEOUT)
    client.set_user(exp["user"])
    client.set_password(exp["password"])
    async with client:
        n = await check_values(client, exp)
    print(f"ok: None endpoint as {exp['user']!r}: {n} values read")
    with tempfile.TemporaryDirectory(prefix="linesim-opcua-client-") as tmp:
        certs = Path(tmp)
        for mode in (ua.MessageSecurityMode.Sign, ua.MessageSecurityMode.SignAndEncrypt):
            url = endpoint_url(endpoints, mode)
            client = await secure_client(url, exp, mode, certs, exp["password"])
            async with client:
                n = await check_values(client, exp)
            print(f"ok: Basic256Sha256 {mode.name} as {exp['user']!r} via {url}: {n} values read")
        url = endpoint_url(endpoints, ua.MessageSecurityMode.SignAndEncrypt)
        client = await secure_client(url, exp, ua.MessageSecurityMode.SignAndEncrypt, certs, exp["password"] + "-wrong")
        try:
            await client.connect()
        except Exception as e:  # the session activation fails: BadIdentityTokenRejected / BadUserAccessDenied
            print(f"ok: wrong password refused ({type(e).__name__}: {e})")
        else:
            await client.disconnect()
            raise Failure("a login with a wrong password was accepted")


async def expect_drop(url, exp):
    """Connects, says READY, then waits until the server drops the connection."""
    client = Client(url, timeout=5)
    await client.connect()
    ns = await client.get_namespace_index(exp["namespace"])
    node = client.get_node(ua.NodeId(exp["tags"][0]["node_id"], ns))
    await node.read_value()
    print("READY", flush=True)
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        try:
            await asyncio.wait_for(node.read_value(), 2)
        except Exception as e:
            print(f"ok: connection dropped ({type(e).__name__}: {e})")
            try:
                await client.disconnect()
            except Exception:
                pass
            return
        await asyncio.sleep(0.2)
    raise Failure(f"the connection still works {TIMEOUT} s after the comms-loss fault")


async def expect_rejected(url, exp):
    """A server without anonymous logins and without trusting unknown certificates."""
    client = Client(url, timeout=TIMEOUT)
    try:
        await client.connect()
    except Exception as e:
        print(f"ok: anonymous login refused ({type(e).__name__})")
    else:
        await client.disconnect()
        raise Failure("anonymous login accepted although anonymous logins are off")
    with tempfile.TemporaryDirectory(prefix="linesim-opcua-client-") as tmp:
        mode = ua.MessageSecurityMode.SignAndEncrypt
        client = await secure_client(url, exp, mode, Path(tmp), exp["password"])
        try:
            await client.connect()
        except Exception as e:
            print(f"ok: untrusted client certificate refused ({type(e).__name__}: {e})")
        else:
            await client.disconnect()
            raise Failure("an untrusted client certificate was accepted")


async def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--expected", required=True)
    ap.add_argument("--quick", action="store_true", help="only anonymous reads and the subscription")
    ap.add_argument("--expect-drop", action="store_true", help="print READY once connected, pass when the server drops us")
    ap.add_argument(
        "--expect-rejected", action="store_true", help="pass when anonymous and untrusted-certificate logins are refused"
    )
    args = ap.parse_args()
    exp = json.loads(Path(args.expected).read_text(encoding="utf-8"))
    if args.expect_drop:
        await expect_drop(args.url, exp)
        print("PASS")
        return
    if args.expect_rejected:
        await expect_rejected(args.url, exp)
        print("PASS")
        return
    endpoints = None
    if not args.quick:
        endpoints = await check_endpoints(args.url, exp)
    client = Client(args.url, timeout=TIMEOUT)
    async with client:
        if args.quick:
            n = await check_values(client, exp)
            print(f"ok: {n} values read anonymously")
        else:
            await check_address_space(client, exp)
            await check_write_refused(client, exp)
        await check_subscription(client, exp)
    if not args.quick:
        await check_secure(args.url, endpoints, exp)
    print("PASS")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Failure as e:
        print(f"FAIL: {e}")
        sys.exit(1)
    except Exception as e:
        print(f"FAIL: {type(e).__name__}: {e}")
        raise
