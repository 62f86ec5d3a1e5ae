#!/usr/bin/env python3
"""A shaped link (rate + RTT) between two network namespaces, for benchmarks. Test use only; needs root.

  up    --name NAME [--rate 200mbit] [--rtt-ms 20] [--mtu 9000] [--subnet 10.77.N] [--initcwnd N]
        prints, as its last stdout line, {"node_ns", "srv_ns", "node_ip", "srv_ip", "pid"} as JSON
  down  --name NAME   kill the forwarder, delete both namespaces, remove the state (idempotent)
  bytes --name NAME   {"to_node": rx bytes, "from_node": tx bytes} of the node's device
  check --name NAME   median RTT of 20 round trips, a 50 MB srv->node transfer, the forwarder's CPU
  (all take --state-dir DIR, default /run/shaped-link/NAME)
Use: `nsenter --net=/run/netns/NAME-node CMD` (keeps the caller's mount namespace, as containerd needs)
or `ip netns exec NAME-node CMD` (a private mount namespace); servers bind the srv IP in NAME-srv.

Design. `up` makes namespaces NAME-node and NAME-srv (lo up in each) and starts a forwarder daemon
(this file, `_forward`). It enters each namespace in turn (setns; via ctypes, as os.setns needs Python
3.12) and creates a TUN device there (IFF_TUN|IFF_NO_PI; "to-srv" in node, "to-node" in srv), so what
one namespace sends comes out of an fd in the forwarder, which writes it into the other namespace's TUN
after rtt/2. The devices are not persistent and vanish when the forwarder exits. Packets pass unchanged:
TCP is end to end and sees the configured RTT.
  - Delay: a heap of (deadline, seq, direction, packet); seq keeps FIFO order for equal deadlines, and
    the constant delay keeps packet order. select() (microsecond timeouts, unlike poll/epoll) sleeps
    until the next deadline or packet; nothing spins. Timer slack is 1 ns; packets still leave ~0.1-0.3
    ms late (wakeup latency), more on a loaded machine.
  - Bound: at most max(4 MB, rate*rtt) queued per direction; beyond that packets are dropped (counted
    in the log). At the shaped rate it holds about rate*rtt/2 (250 KB at 200mbit/20ms).
  - Exit: on a read/select error of either fd, or within ~1 s when a namespace's /run/netns entry
    disappears or is replaced (the open fds would otherwise keep the namespaces alive).
  - Rate: `tc tbf` on the egress of both TUN devices, so each direction is limited; burst is
    max(2*MTU, 1 ms at the rate), the queue about one RTT (min 5 ms) of data.
  - MTU: default 9000 (a common jumbo MTU). The forwarder's cost is per packet and per wakeup, not per
    byte. Measured with `check` on this 2-core VM, idle: MTU 9000 gives 975 Mbit/s at 1gbit/2ms and
    190 Mbit/s at 200mbit/20ms, with the forwarder at ~19% and ~15% of a core; MTU 1500 gives 950 and
    185 Mbit/s at ~40% and ~50%; 16000 and 65000 cost ~13% and ~8% at 1gbit. 9000 keeps the link's CPU
    small next to the workloads being compared; larger MTUs save little more and make TCP's
    packet-counted behaviour (windows of 2-4 packets, loss recovery, bursts) less like a real link.
  - initcwnd: with a large MSS, TCP's initial window of 10 segments would be 90 KB instead of the 14.5 KB
    of a 1500-byte link, hiding slow start (which matters for many small downloads). So the route to the
    peer gets initcwnd = ceil(14480/(MTU-40)) (2 for 9000) unless --initcwnd is given. Fresh-connection
    fetches of 10 KB / 100 KB / 1 MB at 200mbit/20ms then take 41/86/174 ms, against 41/103/174 ms with
    MTU 1500 and 41/63/144 ms with MTU 9000 and the kernel's default initcwnd of 10.
"""
import argparse, ctypes, errno, fcntl, heapq, itertools, json, os, select, shutil, signal
import struct, subprocess, sys, time, zlib

NODE_DEV, SRV_DEV = "to-srv", "to-node"       # device names inside the node / srv namespace
QUEUE_LIMIT = 4 << 20                          # bytes queued per direction, or rate*rtt if more
TUNSETIFF, IFF_TUN, IFF_NO_PI, CLONE_NEWNET = 0x400454CA, 0x0001, 0x1000, 0x40000000


def ns_names(name):
    return name + "-node", name + "-srv"


ns_path = "/run/netns/{}".format


def sh(*cmd, check=True):
    return subprocess.run(cmd, check=check, stdout=subprocess.PIPE, text=True).stdout


def setns(fd):
    if hasattr(os, "setns"):
        return os.setns(fd, CLONE_NEWNET)
    if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def open_tun(ns, dev):
    """Create TUN device `dev` in namespace `ns` (entered just for the open) and return its fd."""
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(ns_path(ns), os.O_RDONLY)
    try:
        setns(target)
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", dev.encode(), IFF_TUN | IFF_NO_PI))
        return fd
    finally:
        setns(home)
        os.close(home), os.close(target)


def forward(a):
    """The daemon: move packets between the two TUN fds, each after a one-way delay."""
    node_ns, srv_ns = ns_names(a.name)
    fds = [open_tun(node_ns, NODE_DEV), open_tun(srv_ns, SRV_DEV)]  # direction d reads fds[d]
    inodes = [os.stat(ns_path(ns)).st_ino for ns in (node_ns, srv_ns)]
    ctypes.CDLL(None).prctl(29, 1, 0, 0, 0)     # PR_SET_TIMERSLACK = 1 ns: wake on time (-80 us of RTT)
    os.write(a.ready_fd, b"ready\n"), os.close(a.ready_fd)
    delay, bufsize = a.delay_ms / 1000.0, a.mtu + 64
    heap, seq, queued, drops = [], itertools.count(), [0, 0], [0, 0]
    next_check = time.monotonic() + 1.0

    def stop(why):
        print("forwarder exit: %s; drops node->srv %d srv->node %d" % (why, *drops), flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, lambda *_: stop("SIGTERM"))

    while True:
        now = time.monotonic()
        wake = min(heap[0][0], next_check) if heap else next_check
        readable, _, broken = select.select(fds, [], fds, max(0.0, wake - now))
        if broken:
            stop("fd error")
        now = time.monotonic()
        for fd in readable:
            d = fds.index(fd)
            for _ in range(64):                  # read a batch, then let the other side have a turn
                try:
                    pkt = os.read(fd, bufsize)
                except BlockingIOError:
                    break
                except OSError as e:
                    stop("read: %s" % e)
                if queued[d] + len(pkt) > a.queue_bytes:
                    drops[d] += 1
                    continue
                queued[d] += len(pkt)
                heapq.heappush(heap, (now + delay, next(seq), d, pkt))
        while heap and heap[0][0] <= now:
            _, _, d, pkt = heapq.heappop(heap)
            queued[d] -= len(pkt)
            try:
                os.write(fds[1 - d], pkt)
            except OSError as e:                 # EIO: device down; ENOBUFS/EAGAIN: no room
                if e.errno not in (errno.EIO, errno.EAGAIN, errno.ENOBUFS, errno.ENOMEM, errno.EINVAL):
                    stop("write: %s" % e)
                drops[d] += 1
        if now >= next_check:
            next_check = now + 1.0
            for ns, ino in zip((node_ns, srv_ns), inodes):
                try:
                    if os.stat(ns_path(ns)).st_ino != ino:
                        stop(ns + " replaced")
                except FileNotFoundError:
                    stop(ns + " gone")


def rate_bytes(rate):
    """tc rate string ("200mbit", "1gbit", "10mbps") to bytes per second."""
    units = {"kbit": 1e3 / 8, "mbit": 1e6 / 8, "gbit": 1e9 / 8, "bit": 1 / 8, "kbps": 1e3, "mbps": 1e6,
             "gbps": 1e9, "bps": 1}                # longest suffixes first
    for u, scale in units.items():
        if rate.lower().endswith(u) and rate[: -len(u)].replace(".", "", 1).isdigit():
            return float(rate[: -len(u)]) * scale
    raise SystemExit("bad --rate %r (use e.g. 200mbit, 1gbit)" % rate)


def state_dir(a):
    return a.state_dir or "/run/shaped-link/" + a.name


def load_state(a):
    try:
        with open(os.path.join(state_dir(a), "state.json")) as f:
            return json.load(f)
    except FileNotFoundError:
        raise SystemExit("shaped-link %s is not up" % a.name)


def up(a):
    down(a)                                      # start from a clean slate
    node_ns, srv_ns = ns_names(a.name)
    base = a.subnet or "10.77.%d" % (zlib.crc32(a.name.encode()) % 256)
    node_ip, srv_ip = base + ".1", base + ".2"
    rate_bps = rate_bytes(a.rate)
    initcwnd = a.initcwnd or -(-14480 // (a.mtu - 40))
    sd = state_dir(a)
    os.makedirs(sd, exist_ok=True)
    for ns in (node_ns, srv_ns):
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    # Start the forwarder detached (own session, no inherited stdout, so `$(shaped-link.py up)` returns);
    # it reports over a pipe once both devices exist.
    r, w = os.pipe()
    with open(os.path.join(sd, "forwarder.log"), "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "_forward", "--name", a.name,
             "--delay-ms", str(a.rtt_ms / 2), "--mtu", str(a.mtu), "--ready-fd", str(w),
             "--queue-bytes", str(max(QUEUE_LIMIT, int(rate_bps * a.rtt_ms / 1000)))],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(w,), start_new_session=True)
    os.close(w)
    ok = select.select([r], [], [], 10)[0] and os.read(r, 16) == b"ready\n"
    os.close(r)
    with open(os.path.join(sd, "forwarder.pid"), "w") as f:
        f.write("%d\n" % proc.pid)
    if not ok:
        down(a)
        raise SystemExit("forwarder failed to start; see its log above")
    burst = max(2 * a.mtu, int(rate_bps / 1000))
    for ns, dev, local, peer in ((node_ns, NODE_DEV, node_ip, srv_ip), (srv_ns, SRV_DEV, srv_ip, node_ip)):
        sh("ip", "-n", ns, "link", "set", dev, "mtu", str(a.mtu))
        sh("ip", "-n", ns, "link", "set", dev, "addrgenmode", "none", check=False)  # no IPv6 chatter
        sh("ip", "-n", ns, "addr", "add", local, "peer", peer + "/32", "dev", dev)
        sh("tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf", "rate", a.rate,
           "burst", str(burst), "latency", "%gms" % max(a.rtt_ms, 5))
        sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", ns, "route", "replace", peer + "/32", "dev", dev, "src", local,
           "initcwnd", str(initcwnd))
    info = {"node_ns": node_ns, "srv_ns": srv_ns, "node_ip": node_ip, "srv_ip": srv_ip, "pid": proc.pid}
    with open(os.path.join(sd, "state.json"), "w") as f:
        json.dump(dict(info, rate=a.rate, rtt_ms=a.rtt_ms, mtu=a.mtu, initcwnd=initcwnd), f)
    print(json.dumps(info))


def down(a):
    sd = state_dir(a)
    try:
        pid = int(open(os.path.join(sd, "forwarder.pid")).read())
        cmd = open("/proc/%d/cmdline" % pid, "rb").read().split(b"\0")
        if b"_forward" in cmd and a.name.encode() in cmd:   # only our forwarder, never a reused pid
            os.kill(pid, signal.SIGTERM)
            for _ in range(50):
                if not os.path.exists("/proc/%d" % pid) or " Z " in open("/proc/%d/stat" % pid).read():
                    break
                time.sleep(0.05)
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    for ns in ns_names(a.name):
        if os.path.exists(ns_path(ns)):
            sh("ip", "netns", "del", ns)
    if os.path.isdir(sd):
        log = os.path.join(sd, "forwarder.log")
        if os.path.exists(log):
            sys.stderr.write(open(log).read())
        shutil.rmtree(sd)


def bytes_cmd(a):
    ns = load_state(a)["node_ns"]
    st = json.loads(sh("ip", "-n", ns, "-j", "-s", "link", "show", NODE_DEV))[0]["stats64"]
    print(json.dumps({"to_node": st["rx"]["bytes"], "from_node": st["tx"]["bytes"]}))


SERVER = r"""
import socket, sys
s = socket.socket(); s.bind((sys.argv[1], 0)); s.listen(1); s.settimeout(60)
print(s.getsockname()[1], flush=True)
c = s.accept()[0]; c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
chunk = memoryview(bytes(1 << 20))
while True:
    op = c.recv(9)
    if op[:1] == b"p": c.sendall(b"p")
    elif op[:1] == b"d":
        n = int.from_bytes(op[1:], "big")
        while n > 0: n -= c.send(chunk[:min(n, len(chunk))])
    else: break
"""
CLIENT = r"""
import json, socket, statistics, sys, time
c = socket.create_connection((sys.argv[1], int(sys.argv[2]))); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
rtts = []
for _ in range(21):
    t = time.perf_counter(); c.sendall(b"p".ljust(9, b"\0")); c.recv(1); rtts.append(time.perf_counter() - t)
rtts = rtts[1:]                       # the first round trip may still be in slow start / quickack
size, got, buf = int(sys.argv[3]), 0, bytearray(1 << 20)
print("bulk", flush=True)
t = time.perf_counter(); c.sendall(b"d" + size.to_bytes(8, "big"))
while got < size: got += c.recv_into(buf)
dt = time.perf_counter() - t
print(json.dumps({"rtt_ms_median": round(statistics.median(rtts) * 1e3, 3), "rtt_ms_min": round(min(rtts) * 1e3, 3),
                  "rtt_ms_max": round(max(rtts) * 1e3, 3), "bytes": size, "seconds": round(dt, 3),
                  "mbit_per_s": round(size * 8 / dt / 1e6, 1)}))
"""


def cpu_seconds(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")     # utime + stime


def check(a):
    st = load_state(a)
    srv = subprocess.Popen(["ip", "netns", "exec", st["srv_ns"], sys.executable, "-c", SERVER, st["srv_ip"]],
                           stdout=subprocess.PIPE, text=True)
    try:
        port = srv.stdout.readline().strip()
        cli = subprocess.Popen(["ip", "netns", "exec", st["node_ns"], sys.executable, "-c", CLIENT,
                                st["srv_ip"], port, str(a.size)], stdout=subprocess.PIPE, text=True)
        if cli.stdout.readline().strip() != "bulk":
            raise SystemExit("check: no connection (is the forwarder, pid %d, alive?)" % st["pid"])
        cpu0, t0 = cpu_seconds(st["pid"]), time.monotonic()
        res = json.loads(cli.stdout.readline())
        cpu, wall = cpu_seconds(st["pid"]) - cpu0, time.monotonic() - t0
        cli.wait()
    finally:
        srv.kill(), srv.wait()
    qdisc = lambda ns, dev: json.loads(sh("tc", "-n", ns, "-s", "-j", "qdisc", "show", "dev", dev))[0]
    res.update(profile="%s/%gms mtu %d" % (st["rate"], st["rtt_ms"], st["mtu"]),
               forwarder_cpu_pct_of_core=round(100 * cpu / wall, 1),
               tbf_drops={"node": qdisc(st["node_ns"], NODE_DEV)["drops"],
                          "srv": qdisc(st["srv_ns"], SRV_DEV)["drops"]})
    print(json.dumps(res))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for cmd in ("up", "down", "bytes", "check", "_forward"):
        s = sub.add_parser(cmd)
        s.add_argument("--name", required=True)
        s.add_argument("--state-dir", help="default /run/shaped-link/NAME")
        if cmd in ("up", "_forward"):
            s.add_argument("--mtu", type=int, default=9000)
    up_p, fw_p = sub.choices["up"], sub.choices["_forward"]
    up_p.add_argument("--rate", default="200mbit", help="tc rate, each direction")
    up_p.add_argument("--rtt-ms", type=float, default=20.0)
    up_p.add_argument("--subnet", help="first three octets, e.g. 10.77.3 (default derived from NAME)")
    up_p.add_argument("--initcwnd", type=int, help="default: the bytes of 10 segments at MTU 1500")
    sub.choices["check"].add_argument("--size", type=int, default=50 << 20)
    fw_p.add_argument("--delay-ms", type=float, required=True)
    fw_p.add_argument("--ready-fd", type=int, required=True)
    fw_p.add_argument("--queue-bytes", type=int, required=True)
    a = p.parse_args()
    {"up": up, "down": down, "bytes": bytes_cmd, "check": check, "_forward": forward}[a.cmd](a)


if __name__ == "__main__":
    main()
