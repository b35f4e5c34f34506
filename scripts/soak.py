#!/usr/bin/python3
"""The python half of scripts/soak.sh (which builds the tree, the image and the server, and stops
the server at the end). Needs /usr/bin/python3 with python3-libnbd.

    soak.py tree DIR SEED
        A tree of big random files, many small files and sparse files with holes.
    soak.py run URI IMAGE PID SECONDS CLIENTS SEED [TLS_URI]
        CLIENTS sessions at a time for SECONDS against the server PID serving IMAGE's bytes at
        URI: random reads checked against IMAGE, block status checked against IMAGE's zeros,
        clean and abrupt disconnects (handle closed with reads in flight, a raw socket closed
        mid-reply or mid-handshake, a client process SIGKILLed mid-transfer), and now and then
        nbdinfo --map and nbdcopy. With TLS_URI (the same server with TLS, e.g. nbds+unix://
        with a PSK), about half the libnbd sessions and tools use it. Then: the whole disk read
        back equals IMAGE, the server is alive, its thread count is back to its baseline, its
        RSS under 200 MiB, and its peak RSS during the soak at most 256 MiB. Prints one summary
        line and exits 1 on any problem.
    soak.py hog URI
        A client keeping 32 MiB reads in flight until killed (spawned by run).
"""

import ctypes
import hashlib
import mmap
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse

import nbd

RSS_LIMIT_KIB = 200 * 1024  # after the soak, with the clients gone
PEAK_RSS_LIMIT_KIB = 256 * 1024  # at any moment during it
MAX = 32 << 20


class Buffers:
    """nbd.Buffer objects, reused: python3-libnbd 1.14 never frees one (200 reads into new
    4 MiB buffers leave 800 MiB behind), so a soak that made a new one per read ran out of
    memory. Buffers are taken by size and given back once libnbd is done with them (the command
    retired, or the handle closed)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.free = {}

    def take(self, n):
        with self.lock:
            spare = self.free.get(n)
            if spare:
                return spare.pop()
        return nbd.Buffer(n)

    def give(self, bufs):
        with self.lock:
            for b in bufs:
                self.free.setdefault(len(b), []).append(b)


BUFFERS = Buffers()


def make_tree(d, seed):
    rng = random.Random(seed)
    os.makedirs(d)
    for i in range(4):  # big files of random data
        with open(os.path.join(d, "big%d" % i), "wb") as f:
            for _ in range(rng.randrange(12, 25)):
                f.write(os.urandom(1 << 20))
    for i in range(1500):  # many small files
        sub = os.path.join(d, "small", "d%02d" % (i % 30))
        os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, "f%04d" % i), "wb") as f:
            f.write(rng.randbytes(rng.choice([0, 1, 100, 4095, 4096, 4097, rng.randrange(12288)])))
    for i in range(3):  # sparse: islands of data between holes
        with open(os.path.join(d, "sparse%d" % i), "wb") as f:
            size = rng.randrange(16, 65) << 20
            f.truncate(size)
            for _ in range(rng.randrange(1, 6)):
                n = rng.randrange(1, 300000)
                f.seek(rng.randrange(size - n))
                f.write(os.urandom(n))
    with open(os.path.join(d, "empty-sparse"), "wb") as f:
        f.truncate(24 << 20)


def proc_status(pid):
    """(VmRSS KiB, threads) of the server, or None once it is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return int(fields["VmRSS"].split()[0]), int(fields["Threads"])
    except (OSError, KeyError, ValueError):
        return None


def die_with_parent():
    """preexec_fn: the child gets SIGKILL if the thread that started it dies."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Soak:
    def __init__(self, uri, image, pid, seconds, clients, seed, tls_uri=None):
        self.uri, self.pid, self.seconds, self.clients = uri, pid, seconds, clients
        self.tls_uri = tls_uri
        self.sock = urllib.parse.parse_qs(urllib.parse.urlparse(uri).query)["socket"][0]
        with open(image, "rb") as f:
            self.img = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        self.size = len(self.img)
        self.seed = seed
        self.lock = threading.Lock()
        self.n = {k: 0 for k in ("sessions", "tls", "reads", "bytes", "mismatches", "errors",
                                 "block_status", "clean", "abrupt", "killed", "raw", "nbdinfo",
                                 "nbdcopy")}
        self.problems = []
        self.peak = (0, 0)
        self.copying = threading.Lock()

    def count(self, **kw):
        with self.lock:
            for k, v in kw.items():
                self.n[k] += v

    def problem(self, kind, msg):
        with self.lock:
            self.n[kind] += 1
            if len(self.problems) < 30:
                self.problems.append(msg)

    def pick_uri(self, rng):
        """The TLS URI about half the time (when there is one), else the plain one."""
        if self.tls_uri and rng.random() < 0.5:
            self.count(tls=1)
            return self.tls_uri
        return self.uri

    def handle(self, meta=False, uri=None):
        h = nbd.NBD()
        h.set_uri_allow_local_file(True)  # the TLS URI names its PSK file
        if meta:
            h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
        h.connect_uri(uri or self.uri)
        if h.get_size() != self.size:
            self.problem("mismatches", "served size %d, image %d" % (h.get_size(), self.size))
        return h

    def random_read(self, rng, exact=False):
        n = min(self.size, 4096 << rng.randrange(11))
        if not exact and rng.random() < 0.25:
            n = max(1, n - rng.randrange(4096))
        off = rng.randrange(self.size - n + 1)
        if rng.random() < 0.75:
            off -= off % 4096
        return off, n

    def compare(self, what, off, data):
        if data != self.img[off:off + len(data)]:
            self.problem("mismatches", "%s: %d bytes at %d differ from the image"
                         % (what, len(data), off))

    def check_status(self, h, rng):
        off = rng.randrange(self.size)
        count = min(self.size - off, rng.choice([4096, 1 << 20, 64 << 20]))
        got = []

        def cb(ctx, o, entries, err):
            got.extend(zip(entries[0::2], entries[1::2]))
            return 0

        h.block_status(count, off, cb)
        if not got:
            self.problem("errors", "block status at %d: no extents" % off)
        for n, flags in got:
            n = min(n, self.size - off)
            if flags & 2 and self.img[off:off + n].count(0) != n:
                self.problem("mismatches", "block status: [%d, +%d) said zero, has data"
                             % (off, n))
            off += n
            if off >= self.size:
                break
        self.count(block_status=1)

    # --- sessions ---------------------------------------------------------------------------

    def reader(self, rng, deadline, abrupt):
        """Random reads (one at a time or several in flight) and block status; then a clean
        NBD_CMD_DISC, or (abrupt) the handle closed with reads in flight."""
        h = self.handle(meta=True, uri=self.pick_uri(rng))
        end = min(deadline, time.monotonic() + rng.uniform(0.2, 8))
        reads = nbytes = 0
        while time.monotonic() < end:
            if rng.random() < 0.05:
                self.check_status(h, rng)
            elif rng.random() < 0.3:
                # Whole powers of two only, so that buffers can be reused (see Buffers).
                reqs = [self.random_read(rng, exact=True) for _ in range(rng.randrange(2, 9))]
                bufs = [(o, BUFFERS.take(n)) for o, n in reqs]
                pending = {h.aio_pread(b, o) for o, b in bufs}
                while pending:  # a completed command is retired: ask about it once
                    pending = {c for c in pending if not h.aio_command_completed(c)}
                    if pending:
                        h.poll(1000)
                for o, b in bufs:
                    self.compare("aio reader", o, b.to_bytearray())
                    reads, nbytes = reads + 1, nbytes + len(b)
                BUFFERS.give(b for _, b in bufs)
            else:
                off, n = self.random_read(rng)
                self.compare("reader", off, h.pread(n, off))
                reads, nbytes = reads + 1, nbytes + n
        self.count(reads=reads, bytes=nbytes)
        if abrupt:
            held = [BUFFERS.take(MAX) for _ in range(rng.randrange(1, 6))]
            for b in held:
                h.aio_pread(b, rng.randrange(self.size - MAX + 1))
            h.poll(0)
            del h  # nbd_close: the socket shut with the reads in flight
            BUFFERS.give(held)  # closed: libnbd no longer writes into them
            self.count(abrupt=1)
        else:
            h.shutdown()
            self.count(clean=1)

    def killed(self, rng, deadline):
        """A client process with 32 MiB reads in flight, SIGKILLed mid-transfer."""
        p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "hog",
                              self.pick_uri(rng)],
                             stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                             preexec_fn=die_with_parent)
        try:
            line = p.stdout.readline()
            if line.strip() != b"submitted":
                self.problem("errors", "hog client: %r, exit %s" % (line, p.poll()))
                return
            time.sleep(rng.uniform(0, 1.5))
            if p.poll() is not None:
                self.problem("errors", "hog client exited %s before it was killed" % p.poll())
        finally:
            p.kill()
            p.wait()
            p.stdout.close()
        self.count(killed=1)

    def raw(self, rng, deadline):
        """A raw socket: gone mid-greeting, or mid-option, or mid-reply of a 32 MiB read."""
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(60)
        try:
            s.connect(self.sock)
            stage = rng.randrange(3)
            got = s.recv(rng.randrange(1, 18))
            if stage == 0 or not got:
                return
            while len(got) < 18:
                got += s.recv(18 - len(got))
            name = b""
            go = struct.pack(">I", 0) + name + struct.pack(">H", 0)
            opt = struct.pack(">I", 3) + struct.pack(">QII", 0x49484156454F5054, 7, len(go)) + go
            if stage == 1:
                s.sendall(opt[:rng.randrange(1, len(opt))])
                return
            s.sendall(opt)
            while True:  # option replies up to the final ACK
                hdr = b""
                while len(hdr) < 20:
                    b = s.recv(20 - len(hdr))
                    if not b:
                        raise EOFError("closed during NBD_OPT_GO")
                    hdr += b
                _, _, typ, n = struct.unpack(">QIII", hdr)
                while n:
                    b = s.recv(n)
                    if not b:
                        raise EOFError("closed during NBD_OPT_GO")
                    n -= len(b)
                if typ != 3:
                    if typ != 1:
                        self.problem("errors", "raw client: NBD_OPT_GO reply %#x" % typ)
                    break
            off = rng.randrange(self.size - MAX + 1)
            s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, 1, off, MAX))
            want = rng.randrange(16, 4 << 20)
            while want > 0:
                b = s.recv(min(want, 1 << 16))
                if not b:
                    raise EOFError("closed mid-reply")
                want -= len(b)
        finally:
            s.close()
            self.count(raw=1)

    def nbdinfo(self, rng, deadline):
        r = subprocess.run(["nbdinfo", "--map", self.pick_uri(rng)], capture_output=True,
                           timeout=120,
                           preexec_fn=die_with_parent)
        if r.returncode != 0:
            self.problem("errors", "nbdinfo --map: exit %d: %s" % (r.returncode, r.stderr))
            return
        end = 0
        for line in r.stdout.decode().splitlines():
            off, n, flags = (int(w) for w in line.split()[:3])
            if off != end:
                self.problem("errors", "nbdinfo --map: gap at %d (next %d)" % (end, off))
            if flags & 2 and self.img[off:off + n].count(0) != n:
                self.problem("mismatches", "nbdinfo --map: [%d, +%d) zero, has data" % (off, n))
            end = off + n
        if end != self.size:
            self.problem("errors", "nbdinfo --map ends at %d of %d" % (end, self.size))
        self.count(nbdinfo=1)

    def nbdcopy(self, rng, deadline):
        if not self.copying.acquire(blocking=False):
            return self.reader(rng, deadline, False)  # one copy at a time
        try:
            p = subprocess.Popen(["nbdcopy", "--", self.pick_uri(rng), "-"],
                                 stdout=subprocess.PIPE,
                                 stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
            digest, n = hashlib.sha256(), 0
            for chunk in iter(lambda: p.stdout.read(1 << 20), b""):
                digest.update(chunk)
                n += len(chunk)
            p.stdout.close()
            if p.wait(timeout=120) != 0 or n != self.size:
                self.problem("errors", "nbdcopy: exit %s after %d bytes" % (p.returncode, n))
            elif digest.digest() != self.img_digest:
                self.problem("mismatches", "nbdcopy: the disk copied differs from the image")
            self.count(nbdcopy=1, bytes=n)
        finally:
            self.copying.release()

    def session(self, i, deadline):
        rng = random.Random(self.seed * 1000003 + i)
        kind = rng.choices(["reader", "abrupt", "killed", "raw", "nbdinfo", "nbdcopy"],
                           [55, 20, 6, 12, 5, 2])[0]
        try:
            if kind in ("reader", "abrupt"):
                self.reader(rng, deadline, kind == "abrupt")
            else:
                getattr(self, kind)(rng, deadline)
        except (nbd.Error, OSError, EOFError, subprocess.SubprocessError) as e:
            self.problem("errors", "session %d (%s): %s: %s" % (i, kind, type(e).__name__, e))
        self.count(sessions=1)

    def monitor(self, stop):
        while not stop.is_set():
            st = proc_status(self.pid)
            if st is None:
                self.problem("errors", "the server (pid %d) is gone" % self.pid)
                return
            with self.lock:
                self.peak = (max(self.peak[0], st[0]), max(self.peak[1], st[1]))
            stop.wait(0.1)

    def settle(self, want):
        """Waits (bounded) for the server's thread count to fall to `want`."""
        deadline = time.monotonic() + 30
        while True:
            st = proc_status(self.pid)
            if st is None or st[1] <= want or time.monotonic() > deadline:
                return st
            time.sleep(0.1)

    def whole_disk(self):
        h = self.handle()
        digest = hashlib.sha256()
        for off in range(0, self.size, 4 << 20):
            digest.update(h.pread(min(4 << 20, self.size - off), off))
        h.shutdown()
        return digest.digest()

    def run(self):
        self.img_digest = hashlib.sha256(self.img).digest()
        base = proc_status(self.pid)  # no client has connected yet
        if self.whole_disk() != self.img_digest:
            self.problem("mismatches", "before the soak: the served disk differs from the image "
                         "(not built from the same tree with the same identifiers?)")
        if base is None:
            return self.finish(None, None)
        stop = threading.Event()
        mon = threading.Thread(target=self.monitor, args=(stop,), daemon=True)
        mon.start()
        start = time.monotonic()
        deadline = start + self.seconds
        running, i = [], 0
        while time.monotonic() < deadline:
            running = [t for t in running if t.is_alive()]
            while len(running) < self.clients:
                t = threading.Thread(target=self.session, args=(i, deadline), daemon=True)
                t.start()
                running.append(t)
                i += 1
            time.sleep(0.05)
        for t in running:
            t.join(max(0.0, deadline + 180 - time.monotonic()))
            if t.is_alive():
                self.problem("errors", "a client session has not ended 180 s after the end "
                             "(a hang)")
                break
        stop.set()
        mon.join()
        if self.whole_disk() != self.img_digest:
            self.problem("mismatches", "after the soak: the served disk differs from the image")
        after = self.settle(base[1])
        return self.finish(base, after)

    def finish(self, base, after):
        if after is None:
            self.problem("errors", "the server (pid %d) is not running" % self.pid)
        else:
            if after[1] > base[1]:
                self.problem("errors", "%d server threads after the clients left, %d before"
                             % (after[1], base[1]))
            if after[0] >= RSS_LIMIT_KIB:
                self.problem("errors", "server RSS %d KiB after the soak" % after[0])
        if self.peak[0] > PEAK_RSS_LIMIT_KIB:
            self.problem("errors", "server RSS peaked at %d KiB (limit %d KiB)"
                         % (self.peak[0], PEAK_RSS_LIMIT_KIB))
        n, peak = self.n, self.peak
        gone = lambda st, i: "gone" if st is None else "%d" % st[i]
        print("soak: %d s, %d sessions (%d over TLS), reads=%d bytes=%d block_status=%d "
              "mismatches=%d "
              "errors=%d disconnects=%d (clean %d, abrupt %d, killed %d, raw %d), nbdinfo=%d "
              "nbdcopy=%d; server RSS %s KiB -> peak %d KiB -> %s KiB, threads %s -> peak %d -> %s"
              % (self.seconds, n["sessions"], n["tls"], n["reads"], n["bytes"], n["block_status"],
                 n["mismatches"], n["errors"], n["clean"] + n["abrupt"] + n["killed"] + n["raw"],
                 n["clean"], n["abrupt"], n["killed"], n["raw"], n["nbdinfo"], n["nbdcopy"],
                 gone(base, 0), peak[0], gone(after, 0), gone(base, 1), peak[1], gone(after, 1)))
        for p in self.problems:
            print("soak: PROBLEM:", p)
        sys.stdout.flush()
        return 1 if n["mismatches"] or n["errors"] else 0


def hog(uri):
    h = nbd.NBD()
    h.set_uri_allow_local_file(True)
    h.connect_uri(uri)
    size, rng, pending = h.get_size(), random.Random(), set()
    said = False
    end = time.monotonic() + 120
    while time.monotonic() < end:
        while len(pending) < 6:
            pending.add(h.aio_pread(nbd.Buffer(MAX), rng.randrange(size - MAX + 1)))
        if not said:
            print("submitted", flush=True)
            said = True
        h.poll(1000)
        pending = {c for c in pending if not h.aio_command_completed(c)}


def main():
    cmd, a = sys.argv[1], sys.argv[2:]
    if cmd == "tree":
        make_tree(a[0], int(a[1]))
    elif cmd == "run":
        tls_uri = a[6] if len(a) > 6 else None
        sys.exit(Soak(a[0], a[1], int(a[2]), float(a[3]), int(a[4]), int(a[5]), tls_uri).run())
    elif cmd == "hog":
        hog(a[0])
    else:
        sys.exit("soak.py: unknown command %r" % cmd)


if __name__ == "__main__":
    main()
