#!/usr/bin/env python3
"""An OPC UA server (asyncua) whose variables change on a clock, for tests of the gateway's OPC UA client.

Usage:
  python3 tests/interop/opcua_server.py --port P --dir DIR [--vars 100] [--period-ms 200]
                                        [--user NAME --password PW] [--user-cert USER.der]
                                        [--events-every N]

Endpoint opc.tcp://127.0.0.1:P/, application URI urn:interop:server; the variables
live in namespace urn:interop:plc, which is namespace index 2.

Security policies: None, Basic256Sha256 Sign and Basic256Sha256 SignAndEncrypt.
The server certificate and key are DIR/server_cert.der and DIR/server_key.pem,
made (self-signed, SAN: URI urn:interop:server, DNS localhost and the host name,
IP 127.0.0.1) on the first start and reused unchanged when the server starts
again with the same DIR. Any client certificate is accepted.
Identity: with --user/--password only that user with that password may log in
(anonymous and wrong passwords are refused); without them only anonymous.
With --user-cert USER.der the X.509 user identity with exactly that certificate
may log in too (asyncua checks the token's signature with it).

Variables: Objects/Plc/V000 .. V{N-1} (NodeId ns=2;s=Plc/V000, browse name 2:V000),
read-only; the type of Vi is TYPES[i % 7]:
  Double, Float, Int32, UInt16, Int64, Boolean, String
Numeric ones have the properties EURange (0..1000) and EngineeringUnits.
Every --period-ms the server writes step k (0 at each process start) to every
variable, with SourceTimestamp = ServerTimestamp = now (UTC):
  Double  round(100*sin(k*0.1+i)+500, 3)     Float   (k*7+i) % 1000 + 0.25
  Int32   k*3+i-50                           UInt16  (k*11+i) % 65536
  Int64   10**12 + k*13+i                    Boolean (k+i) % 2 == 0
  String  f"s{k}-{i}"
The last variable (index N-1) carries the quality: with n = k+1, when n % 5 == 0
its status is UncertainLastUsableValue (0x40900000) with the new value; else when
n % 7 == 0 it is BadSensorFailure (0x808C0000) and the value is null (an OPC UA
server sends no value with a Bad status, asyncua nulls it); else Good (0).

Log: each change is appended to DIR/changes.jsonl (flushed after every step, before
the values are written to the address space, so every value a client can see is
in the log, even after SIGKILL), one JSON object a line:
  {"node": "ns=2;s=Plc/V007", "type": "Double", "value": 207.351,
   "ts_ns": 1732871102123456000, "status": 0}
"ts_ns" is the SourceTimestamp exactly as written (nanoseconds since the Unix
epoch; whole microseconds, so it survives the 100 ns OPC UA DateTime exactly).
Int64 values are JSON integers, Float values are exact float32 values, "value"
is null for Bad steps.

Prints `READY opc.tcp://127.0.0.1:P/` once serving; exits 0 on SIGTERM/SIGINT,
2 when asyncua is missing, 1 on a set-up error.
"""

import argparse
import asyncio
import gc
import ipaddress
import json
import logging
import math
import os
import signal
import socket
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

try:
    from asyncua import Server, ua
    from asyncua.crypto import cert_gen
    from asyncua.crypto.permission_rules import User, UserRole
    from asyncua.server.user_managers import UserManager
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID
except ImportError as e:  # pragma: no cover - environment problem
    sys.stderr.write(f"FAIL: python package asyncua is missing ({e}): python3 -m pip install -r tests/interop/requirements.txt\n")
    sys.exit(2)

APP_URI = "urn:interop:server"
NAMESPACE = "urn:interop:plc"
NS = 2
TYPES = ["Double", "Float", "Int32", "UInt16", "Int64", "Boolean", "String"]
NUMERIC = {"Double", "Float", "Int32", "UInt16", "Int64"}
UNCERTAIN = ua.StatusCodes.UncertainLastUsableValue  # 0x40900000
BAD = ua.StatusCodes.BadSensorFailure  # 0x808C0000
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MICROSECOND = timedelta(microseconds=1)

log = logging.getLogger("opcua_server")


def node_id(i):
    return f"ns={NS};s=Plc/V{i:03d}"


def value_of(ty, k, i):
    if ty == "Double":
        return round(100 * math.sin(k * 0.1 + i) + 500, 3)
    if ty == "Float":
        return float((k * 7 + i) % 1000) + 0.25
    if ty == "Int32":
        return k * 3 + i - 50
    if ty == "UInt16":
        return (k * 11 + i) % 65536
    if ty == "Int64":
        return 10**12 + k * 13 + i
    if ty == "Boolean":
        return (k + i) % 2 == 0
    return f"s{k}-{i}"


def status_of(k):
    """Status of the last variable at step k."""
    n = k + 1
    if n % 5 == 0:
        return UNCERTAIN
    if n % 7 == 0:
        return BAD
    return ua.StatusCodes.Good


def to_ns(dt):
    """A timezone-aware datetime as exact integer nanoseconds since the Unix epoch."""
    return ((dt - EPOCH) // MICROSECOND) * 1000


class OneUser(UserManager):
    """Lets in one user with one password, or (without a user) anyone the identity tokens allow."""

    def __init__(self, user, password, user_cert=None):
        self.user = user
        self.password = password
        self.user_cert = user_cert  # DER bytes of the one accepted X.509 user certificate

    def get_user(self, iserver, username=None, password=None, certificate=None):
        if certificate is not None and self.user_cert is not None:
            # The token's signature was checked by asyncua; the certificate must be the known one.
            return User(role=UserRole.User, name="x509") if certificate == self.user_cert else None
        if self.user is None:
            return User(role=UserRole.User)
        if username == self.user and password == self.password:
            return User(role=UserRole.User, name=username)
        return None


def write_atomic(path, data):
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def ensure_certificate(d):
    """DIR/server_cert.der and DIR/server_key.pem: made once, then reused."""
    cert, key = d / "server_cert.der", d / "server_key.pem"
    if cert.is_file() and key.is_file():
        return cert, key
    private_key = cert_gen.generate_private_key()
    names = [x509.UniformResourceIdentifier(APP_URI), x509.DNSName("localhost")]
    host = socket.gethostname()
    if host and host != "localhost":
        names.append(x509.DNSName(host))
    names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    certificate = cert_gen.generate_self_signed_app_certificate(
        private_key,
        "linepilot interop server",
        {"organizationName": "linepilot interop"},
        names,
        extended=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        days=3650,
    )
    write_atomic(key, cert_gen.dump_private_key_as_pem(private_key))
    write_atomic(cert, certificate.public_bytes(cert_gen.Encoding.DER))
    return cert, key


async def build(args, d):
    url = f"opc.tcp://127.0.0.1:{args.port}/"
    cert, key = ensure_certificate(d)
    user_cert = Path(args.user_cert).read_bytes() if args.user_cert else None
    server = Server(user_manager=OneUser(args.user, args.password, user_cert))
    server.set_endpoint(url)
    server.set_server_name("linepilot interop server")
    server.product_uri = "urn:interop:server:product"
    server.application_type = ua.ApplicationType.Server
    server._application_uri = APP_URI  # init() publishes it as NamespaceArray[1] and ServerArray[0]
    server.set_security_policy(
        [
            ua.SecurityPolicyType.NoSecurity,
            ua.SecurityPolicyType.Basic256Sha256_Sign,
            ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
        ]
    )
    tokens = [ua.AnonymousIdentityToken] if args.user is None else [ua.UserNameIdentityToken]
    if user_cert is not None:
        tokens.append(ua.X509IdentityToken)
    server.set_identity_tokens(tokens)
    await server.load_certificate(str(cert), format="der")
    await server.load_private_key(str(key), format="pem")
    await server.init()
    await server.set_application_uri(APP_URI)
    idx = await server.register_namespace(NAMESPACE)
    if idx != NS:
        raise RuntimeError(f"namespace {NAMESPACE} got index {idx}, not {NS}")

    plc = await server.nodes.objects.add_folder(ua.NodeId("Plc", NS), ua.QualifiedName("Plc", NS))
    variables = []
    for i in range(args.vars):
        ty = TYPES[i % 7]
        vt = getattr(ua.VariantType, ty)
        nid = ua.NodeId(f"Plc/V{i:03d}", NS)
        var = await plc.add_variable(
            nid, ua.QualifiedName(f"V{i:03d}", NS), value_of(ty, 0, i), vt, datatype=getattr(ua.ObjectIds, ty)
        )
        if ty in NUMERIC:
            await var.add_property(
                ua.NodeId(f"Plc/V{i:03d}.EURange", NS),
                ua.QualifiedName("EURange", 0),
                ua.Range(Low=0.0, High=1000.0),
                datatype=ua.ObjectIds.Range,
            )
            await var.add_property(
                ua.NodeId(f"Plc/V{i:03d}.EngineeringUnits", NS),
                ua.QualifiedName("EngineeringUnits", 0),
                ua.EUInformation(
                    NamespaceUri="http://www.opcfoundation.org/UA/units/un/cefact",
                    UnitId=4408652,  # UNECE "CEL"
                    DisplayName=ua.LocalizedText("°C"),
                    Description=ua.LocalizedText("degree Celsius"),
                ),
                datatype=ua.ObjectIds.EUInformation,
            )
        variables.append((i, ty, vt, nid, node_id(i)))
    return server, url, variables


class Stepper:
    """Writes step k to every variable, logging it first."""

    def __init__(self, server, variables, log_path):
        self.server = server
        self.variables = variables
        self.last = len(variables) - 1
        self.held = None  # value of the last variable before the current step
        self.out = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    async def step(self, k):
        now = datetime.now(timezone.utc)
        ts_ns = to_ns(now)
        lines = []
        values = []
        for i, ty, vt, nid, name in self.variables:
            v = value_of(ty, k, i)
            status = status_of(k) if i == self.last else ua.StatusCodes.Good
            if status == BAD:
                # The value is held, but asyncua (as the spec asks) stores null with a Bad status.
                dv_value = ua.Variant(self.held if self.held is not None else v, vt)
                logged = None
            else:
                dv_value = ua.Variant(v, vt)
                logged = v
                if i == self.last:
                    self.held = v
            dv = ua.DataValue(dv_value, StatusCode=ua.StatusCode(status), SourceTimestamp=now, ServerTimestamp=now)
            values.append((nid, dv))
            lines.append(json.dumps({"node": name, "type": ty, "value": logged, "ts_ns": ts_ns, "status": status}))
        # Log first: every value a client can ever see is then in the log, even after SIGKILL.
        # One write(2) a step, so a kill leaves no partial line.
        data = ("\n".join(lines) + "\n").encode("utf-8")
        while data:
            data = data[os.write(self.out, data) :]
        for nid, dv in values:
            await self.server.write_attribute_value(nid, dv)

    def close(self):
        os.close(self.out)


class Events:
    """Raises a BaseEvent on the Server object (severity 100..900, a message naming
    the step) and logs it first to events.jsonl: {"time_ns", "severity", "message"}."""

    def __init__(self, generator, log_path):
        self.gen = generator
        self.log = log_path

    async def fire(self, k):
        now = datetime.now(timezone.utc)
        severity = 100 + (k * 37) % 801
        message = f"step {k}: line speed above limit"
        self.gen.event.Severity = severity
        with open(self.log, "a") as f:
            f.write(json.dumps({"time_ns": to_ns(now), "severity": severity, "message": message}) + "\n")
        await self.gen.trigger(time_attr=now, message=message)


async def run(args, d):
    server, url, variables = await build(args, d)
    period = args.period_ms / 1000.0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    stepper = Stepper(server, variables, d / "changes.jsonl")
    events = None
    try:
        # Step 0 before clients can connect: no client sees a value that is not in the log.
        start = loop.time()
        await stepper.step(0)
        await server.start()
        if args.events_every:
            events = Events(await server.get_event_generator(), d / "events.jsonl")
        # Start-up builds ~6000 standard nodes; the cyclic GC only slows that down (~15%).
        gc.freeze()
        gc.enable()
        try:
            print(f"READY {url}", flush=True)
            k = 1
            while True:
                delay = start + k * period - loop.time()
                try:
                    await asyncio.wait_for(stop.wait(), timeout=max(delay, 0))
                    break
                except asyncio.TimeoutError:
                    pass
                await stepper.step(k)
                if events is not None and k % args.events_every == 0:
                    await events.fire(k)
                k += 1
        finally:
            await server.stop()
    finally:
        stepper.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", required=True, help="certificate, key and changes.jsonl")
    p.add_argument("--vars", type=int, default=100)
    p.add_argument("--period-ms", type=int, default=200)
    p.add_argument("--events-every", type=int, default=0, help="raise a server event every N steps (0: none)")
    p.add_argument("--user-cert", help="DER file of an X.509 user certificate that may log in")
    p.add_argument("--user")
    p.add_argument("--password")
    args = p.parse_args()
    if (args.user is None) != (args.password is None):
        p.error("--user and --password go together")
    if not 1 <= args.vars <= 1000:
        p.error("--vars must be 1..1000")
    if args.period_ms < 1:
        p.error("--period-ms must be positive")

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # asyncua logs every session and a "Percent deadband not implemented" warning per data change.
    logging.getLogger("asyncua").setLevel(logging.ERROR)

    gc.disable()  # enabled again once the address space is built
    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    try:
        asyncio.run(run(args, d))
    except Exception as e:
        sys.stderr.write(f"FAIL: opcua_server: {e!r}\n")
        sys.exit(1)


if __name__ == "__main__":
    main()
