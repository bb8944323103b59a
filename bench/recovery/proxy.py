#!/usr/bin/env python3
"""A TCP proxy on 127.0.0.1 whose connections can be cut on demand (stdlib only).

Used by the recovery benchmark for the "cut connection" fault: the nanny and its workers reach
the scheduler through this proxy, and the benchmark asks it to close the worker's connection
while both the worker and the scheduler keep running.

    python3 proxy.py --target 127.0.0.1:8786 --control /tmp/x/proxy.sock

prints the port it listens on (one line) once it is ready, then serves until killed. The control
socket (Unix stream socket) takes one command per connection and answers one line:

    cut pid PID   close every proxied connection whose client end belongs to process PID
    cut all       close every proxied connection
    count         the number of open proxied connections

A cut closes both halves (the client's and the upstream one) with an ordinary close, so both
ends see the connection end (EOF / reset) at once; it is not a silent partition.

Which process owns a connection is found the way `ss -p` does it: the socket inodes in
/proc/PID/fd, matched against /proc/net/tcp{,6} for sockets connected to the proxy's port.
"""
import argparse
import asyncio
import os
import signal
import sys


def socket_inodes(pid):
    """The inodes of the sockets process `pid` has open."""
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return inodes
    for name in names:
        try:
            link = os.readlink(os.path.join(fd_dir, name))
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(int(link[8:-1]))
    return inodes


def local_ports_to(port, inodes):
    """Local ports of the TCP sockets among `inodes` whose remote port is `port`."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    local, remote, inode = cols[1], cols[2], int(cols[9])
                    if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == port:
                        ports.add(int(local.rsplit(":", 1)[1], 16))
        except OSError:
            continue
    return ports


class Proxy:
    def __init__(self, target_host, target_port):
        self.target = (target_host, target_port)
        self.port = None
        # client peer port -> (client writer, upstream writer)
        self.conns = {}

    async def handle(self, reader, writer):
        peer_port = writer.get_extra_info("peername")[1]
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.conns[peer_port] = (writer, up_writer)
        try:
            await asyncio.gather(self.pump(reader, up_writer), self.pump(up_reader, writer))
        finally:
            self.conns.pop(peer_port, None)
            for w in (writer, up_writer):
                w.close()

    @staticmethod
    async def pump(reader, writer):
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            # Propagate the end to the other side (a full close: the benchmark's peers do not
            # half-close).
            writer.close()

    def cut(self, ports):
        n = 0
        for port in list(ports):
            pair = self.conns.pop(port, None)
            if pair:
                for w in pair:
                    w.close()
                n += 1
        return n

    async def control(self, reader, writer):
        try:
            words = (await reader.readline()).decode().split()
            if words[:2] == ["cut", "all"]:
                answer = f"cut {self.cut(self.conns.keys())}"
            elif words[:2] == ["cut", "pid"] and len(words) == 3:
                ports = local_ports_to(self.port, socket_inodes(int(words[2])))
                answer = f"cut {self.cut(ports & self.conns.keys())}"
            elif words[:1] == ["count"]:
                answer = f"count {len(self.conns)}"
            else:
                answer = "error: unknown command"
            writer.write((answer + "\n").encode())
            await writer.drain()
        finally:
            writer.close()


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", required=True, help="HOST:PORT to forward to")
    ap.add_argument("--listen-port", type=int, default=0, help="port on 127.0.0.1 (0: any)")
    ap.add_argument("--control", required=True, help="path of the control Unix socket")
    args = ap.parse_args()
    host, port = args.target.rsplit(":", 1)
    proxy = Proxy(host, int(port))
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", args.listen_port)
    proxy.port = server.sockets[0].getsockname()[1]
    await asyncio.start_unix_server(proxy.control, path=args.control)
    print(proxy.port, flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
