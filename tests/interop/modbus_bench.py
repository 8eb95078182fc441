#!/usr/bin/env python3
"""Polling throughput peer for benches/ingest_modbus.rs: pymodbus reads a
Modbus TCP server with a given request plan, as fast as it can or paced.

Usage:
  modbus_bench.py --host 127.0.0.1 --port 5020 --plan plan.json --seconds 10 [--registers-per-s 100000]

--plan   JSON list of reads [{"unit": 1, "table": "holding", "start": 0, "count": 40}, ...]
         (the gateway's plan, so both clients make the same requests)
--registers-per-s  pace whole cycles so that registers (holding + input words)
         per second stay at this rate; 0 (default) = as fast as possible

Every read's values are decoded to Python ints/bools (pymodbus does that);
nothing else is done with them. Prints one JSON object on stdout: cycles,
reads, registers, bits, wall_s, cpu_s (time.process_time: user + sys of this
process). Exits 2 with an install hint when pymodbus is missing.
"""

import argparse
import json
import sys
import time

try:
    from pymodbus.client import ModbusTcpClient
except ImportError:
    print("FAIL: the Python package pymodbus is missing: python3 -m pip install pymodbus", file=sys.stderr)
    sys.exit(2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--plan", required=True)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--registers-per-s", type=float, default=0.0)
    a = ap.parse_args()
    with open(a.plan) as f:
        plan = json.load(f)
    client = ModbusTcpClient(a.host, port=a.port, timeout=2)
    if not client.connect():
        print(f"FAIL: cannot connect to {a.host}:{a.port}", file=sys.stderr)
        sys.exit(1)
    calls = {
        "coil": client.read_coils,
        "discrete": client.read_discrete_inputs,
        "holding": client.read_holding_registers,
        "input": client.read_input_registers,
    }
    reqs = [(calls[r["table"]], r["start"], r["count"], r["unit"], r["table"] in ("coil", "discrete")) for r in plan]
    regs_per_cycle = sum(r["count"] for r in plan if r["table"] in ("holding", "input"))
    bits_per_cycle = sum(r["count"] for r in plan if r["table"] in ("coil", "discrete"))
    period = regs_per_cycle / a.registers_per_s if a.registers_per_s > 0 else 0.0
    cycles = 0
    errors = 0
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    end = t0 + a.seconds
    nxt = t0
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        if period > 0:
            if nxt > now:
                time.sleep(nxt - now)
            nxt += period
        for call, start, count, unit, bits in reqs:
            r = call(start, count=count, device_id=unit)
            if r.isError():
                errors += 1
            else:
                v = r.bits if bits else r.registers
                if len(v) < count:
                    errors += 1
        cycles += 1
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    client.close()
    print(json.dumps({
        "cycles": cycles,
        "reads": cycles * len(reqs),
        "registers": cycles * regs_per_cycle,
        "bits": cycles * bits_per_cycle,
        "errors": errors,
        "wall_s": wall,
        "cpu_s": cpu,
    }))


if __name__ == "__main__":
    main()
