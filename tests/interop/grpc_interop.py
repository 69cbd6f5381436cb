#!/usr/bin/env python3
"""Interop: switchboard's gRPC front from a client not written in Rust.

Generates Python stubs from proto/switchboard.proto at run time with
grpcio-tools, then drives every RPC against a running server:

    python3 -m pip install grpcio grpcio-tools
    switchboard --grpc 127.0.0.1:50051 &
    python3 tests/interop/grpc_interop.py 127.0.0.1:50051

It exits 0 and prints a transcript when everything matches, and exits 1
with the first mismatch otherwise. `cargo test --features grpc --test
grpc_interop` runs it against a test server and checks, over a WebSocket,
that what Python published reached the other transport.
"""

import os
import queue
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTO_DIR = os.path.join(ROOT, "proto")
WAIT = 10.0  # seconds any one expected event may take


def generate_stubs():
    """Compiles the .proto into a temporary directory and imports it."""
    out = tempfile.mkdtemp(prefix="switchboard-py-")
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}",
         f"--python_out={out}", f"--grpc_python_out={out}", "switchboard.proto"],
        check=True,
    )
    sys.path.insert(0, out)
    import switchboard_pb2
    import switchboard_pb2_grpc
    return switchboard_pb2, switchboard_pb2_grpc


class Failed(Exception):
    pass


def check(condition, what):
    if not condition:
        raise Failed(what)


class Reader:
    """Reads a response stream on a thread so the test can wait with deadlines."""

    def __init__(self, call, label):
        self.call, self.label = call, label
        self.events = queue.Queue()
        self.ended = None  # None while open; then "OK" or the error code name
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        import grpc
        try:
            for event in self.call:
                self.events.put(event)
            self.ended = "OK"
        except grpc.RpcError as e:
            self.ended = e.code().name
        self.events.put(None)

    def wait_for(self, want, what):
        deadline = time.monotonic() + WAIT
        while True:
            left = deadline - time.monotonic()
            try:
                event = self.events.get(timeout=max(left, 0.01))
            except queue.Empty:
                raise Failed(f"{self.label}: waited {WAIT}s for {what}")
            if event is None:
                raise Failed(f"{self.label}: stream ended ({self.ended}) while waiting for {what}")
            show(self.label, event)
            if want(event):
                return event


def show(label, event):
    fields = [f"{k}={getattr(event, k)!r}" for k in ("room", "id", "from", "from_id", "text")
              if getattr(event, k)]
    print(f"  {label:<8} {event.type:<8} {' '.join(fields)}")


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    addr = sys.argv[1]
    pb, pb_grpc = generate_stubs()
    import grpc

    channel = grpc.insecure_channel(addr)
    grpc.channel_ready_future(channel).result(timeout=WAIT)
    stub = pb_grpc.SwitchboardStub(channel)

    print("Subscribe (server streaming)")
    sub = Reader(stub.Subscribe(pb.SubscribeRequest(rooms=["interop"], name="py-sub")), "sub")
    welcome = sub.wait_for(lambda e: e.type == "welcome", "the welcome")
    check(getattr(welcome, "from") == "py-sub" and welcome.from_id.startswith("c"), f"welcome: {welcome}")
    sub.wait_for(lambda e: e.type == "joined", "its own join notice")

    print("Publish (client streaming)")
    texts = [f"py message {n}" for n in (1, 2, 3)]
    summary = stub.Publish(iter(pb.PublishRequest(room="interop", text=t, **{"from": "py-pub"}) for t in texts))
    print(f"  summary  accepted={summary.accepted} last_id={summary.last_id}")
    check(summary.accepted == 3, f"accepted {summary.accepted}, not 3")
    got = [sub.wait_for(lambda e: e.type == "message", f"message {n}") for n in (1, 2, 3)]
    check([e.text for e in got] == texts, f"texts in order: {[e.text for e in got]}")
    check(all(e.from_id == "grpc" and getattr(e, "from") == "py-pub" for e in got), "from / from_id")
    check(got[-1].id == summary.last_id, "the last id matches the summary")
    check(got[0].id < got[1].id < got[2].id, "ids increase")

    print("Chat (bidirectional)")
    outbox = queue.Queue()

    def requests():
        while (request := outbox.get()) is not None:
            yield request

    chat = Reader(stub.Chat(requests()), "chat")
    chat.wait_for(lambda e: e.type == "welcome", "the chat's welcome")
    outbox.put(pb.ChatRequest(nick="py-chat"))
    outbox.put(pb.ChatRequest(join="interop"))
    outbox.put(pb.ChatRequest(send=pb.Send(room="interop", text="hello from python")))
    chat.wait_for(lambda e: e.type == "message" and e.text == "hello from python", "its own message")
    heard = sub.wait_for(lambda e: e.type == "message", "the chat's message")
    check(getattr(heard, "from") == "py-chat", f"sender name: {heard}")

    print("Since (replay)")
    replay = Reader(stub.Subscribe(pb.SubscribeRequest(rooms=["interop"], since=got[0].id)), "replay")
    again = [replay.wait_for(lambda e: e.type == "message", f"replayed {n}") for n in (2, 3)]
    check([e.text for e in again] == texts[1:], f"replayed: {[e.text for e in again]}")
    replay.call.cancel()

    print("Errors")
    try:
        stub.Publish(iter([pb.PublishRequest(room="no spaces", text="x")]))
        raise Failed("a bad room was accepted")
    except grpc.RpcError as e:
        print(f"  publish  {e.code().name}: {e.details()}")
        check(e.code() == grpc.StatusCode.INVALID_ARGUMENT and "room names" in e.details(), e.details())
    bad = Reader(stub.Chat(iter([pb.ChatRequest(send=pb.Send(room="interop", text=""))])), "bad")
    while bad.events.get(timeout=WAIT) is not None:
        pass
    print(f"  chat     {bad.ended}")
    check(bad.ended == "INVALID_ARGUMENT", f"empty text ended the chat with {bad.ended}")

    print("Cancel (the subscriber leaves)")
    sub.call.cancel()
    chat.wait_for(lambda e: e.type == "left" and getattr(e, "from") == "py-sub", "py-sub's left notice")
    outbox.put(None)  # half-close: the chat ends OK
    while chat.events.get(timeout=WAIT) is not None:
        pass
    check(chat.ended == "OK", f"the chat ended with {chat.ended}")
    print("interop: all checks passed")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Failed as e:
        print(f"interop FAILED: {e}", file=sys.stderr)
        sys.exit(1)
