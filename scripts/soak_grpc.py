#!/usr/bin/env python3
"""The soak's gRPC publisher: loadgen markers into a room over Publish.

    python3 scripts/soak_grpc.py ADDR --room soak --trial 1 --publisher 2 \
        --rate 10 --seconds 600 [--size 64]

Every second it opens one client-streaming Publish with the messages due in
that second, each text a loadgen marker (`LG|trial|publisher|seq|0|`, padded
with `x`), and checks the PublishSummary accepts them all. The scheduled
time is 0, so loadgen counts these messages for loss and order but does not
time them (its clock is not this process's). It stops by itself after
--seconds and prints one JSON line: {"sent": N, "errors": E, "failure": ...}.
`loadgen soak --grpc ADDR` runs it; it needs grpcio and grpcio-tools.
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "interop"))
from grpc_interop import generate_stubs  # noqa: E402  (the stubs, compiled at run time)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("addr")
    parser.add_argument("--room", default="soak")
    parser.add_argument("--trial", type=int, default=1)
    parser.add_argument("--publisher", type=int, default=2)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    if not args.addr.startswith("127.0.0.1:"):
        print(json.dumps({"sent": 0, "errors": 0, "failure": "only 127.0.0.1 targets"}))
        return 2

    # The stub generator prints nothing; keep stdout for the one JSON line.
    pb, pb_grpc = generate_stubs()
    import grpc

    channel = grpc.insecure_channel(args.addr)
    grpc.channel_ready_future(channel).result(timeout=10)
    stub = pb_grpc.SwitchboardStub(channel)

    sent, errors, failure, seq = 0, 0, None, 0
    started = time.monotonic()
    total = int(args.rate * args.seconds)
    second = 0
    while seq < total and failure is None:
        second += 1
        due = min(total, int(args.rate * second))
        texts = []
        while seq < due:
            marker = f"LG|{args.trial}|{args.publisher}|{seq}|0|"
            texts.append(marker.ljust(args.size, "x"))
            seq += 1
        try:
            summary = stub.Publish(
                iter(pb.PublishRequest(room=args.room, text=t, **{"from": "soak-grpc"}) for t in texts),
                timeout=10,
            )
            sent += summary.accepted
            errors += len(texts) - summary.accepted
        except grpc.RpcError as e:
            failure = f"{e.code().name}: {e.details()}"
        wake = started + second
        time.sleep(max(0.0, wake - time.monotonic()))
    print(json.dumps({"sent": sent, "errors": errors, "failure": failure}))
    return 0 if failure is None and errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
