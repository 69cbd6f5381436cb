#!/usr/bin/env python3
"""What many rooms, and large history, cost a server: issue 17, finding 8.

    cargo build --release
    python3 scripts/rooms_memory.py target/release/switchboard rooms
    python3 scripts/rooms_memory.py target/release/switchboard large
    python3 scripts/rooms_memory.py target/release/switchboard large-read [server options...]

Starts BINARY on 127.0.0.1 (port 0), publishes over REST on one keep-alive
connection (pipelined, 32 requests at a time), and prints the answers, the
server's RSS before and after (from /proc) and its room and history metrics.

- rooms: 50,000 rooms × 3 messages of 100 bytes.
- large: 4 rooms × 1000 messages of 60 KB.
- large-read: the same, then replays everything kept to a JSON WebSocket, a
  text-mode WebSocket and an SSE stream, so every event caches every encoding,
  and prints the RSS once more.
The numbers in docs/limits.md ("Rooms and history") come from it.
"""
import json
import socket
import subprocess
import sys
import time
import urllib.request


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def start(binary, options):
    server = subprocess.Popen(
        [binary, "--http", "127.0.0.1:0", "--ws", "127.0.0.1:0", *options],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    ports = {}
    while len(ports) < 2:
        line = server.stdout.readline()
        if not line:
            raise RuntimeError("the server ended before it listened")
        if line.startswith("listening "):
            _, kind, addr = line.split()
            ports[kind] = int(addr.rsplit(":", 1)[1])
    return server, ports["http"], ports["ws"]


def publish_all(http_port, posts, pipeline=32):
    """Sends every (room, body) as a POST; returns how many got each status."""
    sock = socket.create_connection(("127.0.0.1", http_port))
    replies = sock.makefile("rb")
    statuses = {}
    for first in range(0, len(posts), pipeline):
        batch = posts[first:first + pipeline]
        sock.sendall(b"".join(
            f"POST /rooms/{room}/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
            for room, body in batch))
        for _ in batch:
            status = int(replies.readline().split()[1])
            length = 0
            while (line := replies.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            replies.read(length)
            statuses[status] = statuses.get(status, 0) + 1
    sock.close()
    return statuses


def replay(port, path, websocket):
    """Reads everything a subscriber is sent until it has been quiet 2 s."""
    sock = socket.create_connection(("127.0.0.1", port))
    upgrade = ("Upgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
               if websocket else "")
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{upgrade}\r\n".encode())
    sock.settimeout(2)
    got = 0
    try:
        while chunk := sock.recv(1 << 20):
            got += len(chunk)
    except socket.timeout:
        pass  # quiet: everything kept has come
    sock.close()
    return got


def main():
    if len(sys.argv) < 3 or sys.argv[2] not in ("rooms", "large", "large-read"):
        sys.exit(__doc__)
    binary, scenario, options = sys.argv[1], sys.argv[2], sys.argv[3:]
    server, http_port, ws_port = start(binary, options)
    time.sleep(0.5)  # the server restarts itself once with its malloc settings
    before = rss_mb(server.pid)
    if scenario == "rooms":
        body = json.dumps({"text": "x" * 100, "from": "publisher"}).encode()
        posts = [(f"room-{n}", body) for n in range(50_000) for _ in range(3)]
    else:
        body = json.dumps({"text": "y" * 60_000, "from": "publisher"}).encode()
        posts = [(f"big-{n % 4}", body) for n in range(4000)]
    started = time.time()
    statuses = publish_all(http_port, posts)
    took = time.time() - started
    time.sleep(1)
    print(f"{scenario}: {len(posts)} posts in {took:.1f} s, answers {statuses}; "
          f"RSS {before:.1f} -> {rss_mb(server.pid):.1f} MB")
    if scenario == "large-read":
        rooms = "&".join(f"room=big-{n}" for n in range(4))
        for port, path, websocket in ((ws_port, f"/ws?{rooms}&since=0", True),
                                      (ws_port, f"/ws?{rooms}&since=0&format=text", True),
                                      (http_port, f"/events?{rooms}&last_event_id=0", False)):
            got = replay(port, path, websocket)
            print(f"    replayed {got / 1e6:.1f} MB to {path.split('?')[0]}"
                  f"{' (text)' if 'text' in path else ''}")
        time.sleep(1)
        print(f"    RSS once every encoding is cached: {rss_mb(server.pid):.1f} MB")
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics").read().decode()
    for line in metrics.splitlines():
        if line.startswith(("switchboard_rooms", "switchboard_history")):
            print("   ", line)
    server.terminate()
    server.wait(timeout=10)


main()
