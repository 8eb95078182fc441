#!/usr/bin/env python3
"""The peer of benches/ingest_opcua.rs: Python's asyncua client subscribing to
the same N nodes as the gateway, doing nothing with the values but counting them.

    python3 tests/interop/opcua_bench.py --url opc.tcp://127.0.0.1:PORT/ --nodes N \
        --prefix "ns=2;s=Line1/Bench/B" --seconds 30 [--interval-ms 1000]

Subscribes `ns=2;s=<prefix>00000` .. `<prefix>{N-1:05}` (sampling and
publishing interval --interval-ms, queue size 2, --per-sub nodes per
subscription), waits until every node has
reported once, then measures for --seconds: notifications received, process
CPU (user + system) and peak RSS. Prints one JSON object on stdout.
"""

import argparse
import asyncio
import json
import logging
import resource
import sys
import time

try:
    from asyncua import Client, ua
except ImportError as e:  # pragma: no cover
    sys.stderr.write(f"asyncua missing ({e}): python3 -m pip install -r tests/interop/requirements.txt\n")
    sys.exit(3)


class Counter:
    def __init__(self):
        self.count = 0
        self.seen = set()

    def datachange_notification(self, node, val, data):
        self.count += 1
        if len(self.seen) < 10**9:
            self.seen.add(node.nodeid.Identifier)


async def main(args):
    client = Client(url=args.url, timeout=60)
    async with client:
        counter = Counter()
        nodes = [client.get_node(f"{args.prefix}{i:05}") for i in range(args.nodes)]
        t0 = time.monotonic()
        # One subscription per --per-sub nodes (servers limit items per subscription; linesim: 1000).
        for k in range(0, len(nodes), args.per_sub):
            sub = await client.create_subscription(
                ua.CreateSubscriptionParameters(
                    RequestedPublishingInterval=args.interval_ms,
                    RequestedLifetimeCount=300,
                    RequestedMaxKeepAliveCount=10,
                    MaxNotificationsPerPublish=0,
                    PublishingEnabled=True,
                    Priority=0,
                ),
                counter,
            )
            await sub.subscribe_data_change(
                nodes[k : k + args.per_sub], queuesize=2, sampling_interval=args.interval_ms
            )
        subscribe_s = time.monotonic() - t0
        deadline = time.monotonic() + 120
        while len(counter.seen) < args.nodes and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        c0, n0, w0 = time.process_time(), counter.count, time.monotonic()
        await asyncio.sleep(args.seconds)
        c1, n1, w1 = time.process_time(), counter.count, time.monotonic()
        out = {
            "nodes": args.nodes,
            "nodes_reporting": len(counter.seen),
            "subscribe_s": subscribe_s,
            "wall_s": w1 - w0,
            "notifications": n1 - n0,
            "cpu_s": c1 - c0,
            "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        }
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--nodes", type=int, required=True)
    p.add_argument("--prefix", default="ns=2;s=Line1/Bench/B")
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--interval-ms", type=float, default=1000)
    p.add_argument("--per-sub", type=int, default=1000)
    asyncio.run(main(p.parse_args()))
