#!/usr/bin/python3
"""Load clients for tests/nbd_robust.rs, with python3-libnbd: many clients reading at random and
checking every byte against the image file, a whole-disk verified read, and a client that keeps
32 MiB reads in flight until it is killed.

    /usr/bin/python3 load.py readers URI IMAGE CLIENTS READS SEED
    /usr/bin/python3 load.py verify URI IMAGE
    /usr/bin/python3 load.py hog URI INFLIGHT

readers: CLIENTS threads each open a connection; once all are connected it prints `connected
CLIENTS` and waits for a line on stdin (so the test can look at the server with every client
connected); then each makes READS reads of 4 KiB..4 MiB at random offsets and compares them with
IMAGE (the file `linuxdisk-mk` wrote for the same tree, byte-identical to the served disk). verify: the whole disk in 4 MiB reads, compared with IMAGE. Both print one
line `reads=N bytes=B mismatches=M errors=E` (then the problems) and exit 1 unless M and E are 0.
hog: keeps INFLIGHT 32 MiB aio_preads in flight, prints `submitted` once they are sent and
`reading` once the first has completed, and goes on until killed (or 120 s). Needs /usr/bin/python3 (the default python3 lacks nbd).
"""

import mmap
import random
import sys
import threading
import time

import nbd

MAX = 32 << 20


def open_image(path):
    with open(path, "rb") as f:
        return mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.reads = self.bytes = 0
        self.problems = []
        self.mismatches = self.errors = 0

    def add(self, reads, nbytes):
        with self.lock:
            self.reads += reads
            self.bytes += nbytes

    def problem(self, kind, msg):
        with self.lock:
            if kind == "mismatch":
                self.mismatches += 1
            else:
                self.errors += 1
            if len(self.problems) < 20:
                self.problems.append(msg)

    def finish(self):
        print("reads=%d bytes=%d mismatches=%d errors=%d"
              % (self.reads, self.bytes, self.mismatches, self.errors))
        for p in self.problems:
            print("PROBLEM:", p)
        sys.stdout.flush()
        sys.exit(1 if self.mismatches or self.errors else 0)


def random_read(rng, size):
    """(offset, length): 4 KiB..4 MiB (log-uniform), sometimes not 4 KiB-aligned."""
    n = min(size, 4096 << rng.randrange(11))
    if rng.random() < 0.25:
        n = min(size, max(1, n - rng.randrange(4096)))
    off = rng.randrange(size - n + 1)
    if rng.random() < 0.75:
        off -= off % 4096
    return off, n


def reader(i, uri, img, count, seed, tally, started, go):
    rng = random.Random(seed * 1000 + i)
    try:
        h = nbd.NBD()
        h.connect_uri(uri)
    except nbd.Error as e:
        tally.problem("error", "client %d: connect: %s" % (i, e))
        return
    finally:
        started.release()
    size = h.get_size()
    if size != len(img):
        tally.problem("mismatch", "client %d: served size %d, image %d" % (i, size, len(img)))
    go.wait()
    reads = nbytes = 0
    try:
        for _ in range(count):
            off, n = random_read(rng, size)
            data = h.pread(n, off)
            reads += 1
            nbytes += n
            if data != img[off:off + n]:
                tally.problem("mismatch", "client %d: %d bytes at %d differ from the image"
                              % (i, n, off))
        h.shutdown()
    except nbd.Error as e:
        tally.problem("error", "client %d: %s" % (i, e))
    tally.add(reads, nbytes)


def readers(uri, image, clients, count, seed):
    img, tally = open_image(image), Tally()
    started, go = threading.Semaphore(0), threading.Event()
    threads = [threading.Thread(target=reader,
                                args=(i, uri, img, count, seed, tally, started, go))
               for i in range(clients)]
    for t in threads:
        t.start()
    for _ in threads:
        started.acquire()
    print("connected %d" % clients)
    sys.stdout.flush()
    sys.stdin.readline()
    go.set()
    for t in threads:
        t.join()
    tally.finish()


def verify(uri, image):
    img, tally = open_image(image), Tally()
    h = nbd.NBD()
    h.connect_uri(uri)
    size = h.get_size()
    if size != len(img):
        tally.problem("mismatch", "served size %d, image %d" % (size, len(img)))
    for off in range(0, min(size, len(img)), 4 << 20):
        n = min(4 << 20, size - off)
        if h.pread(n, off) != img[off:off + n]:
            tally.problem("mismatch", "%d bytes at %d differ from the image" % (n, off))
        tally.add(1, n)
    h.shutdown()
    tally.finish()


def hog(uri, inflight):
    h = nbd.NBD()
    h.connect_uri(uri)
    size = h.get_size()
    if size < MAX:
        sys.exit("hog: the disk (%d bytes) is smaller than one 32 MiB read" % size)
    rng = random.Random()
    pending, said, submitted = {}, False, False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        while len(pending) < inflight:
            buf = nbd.Buffer(MAX)
            pending[h.aio_pread(buf, rng.randrange(size - MAX + 1))] = buf
        if not submitted:
            print("submitted")
            sys.stdout.flush()
            submitted = True
        h.poll(1000)
        for c in [c for c in pending if h.aio_command_completed(c)]:
            del pending[c]
            if not said:
                print("reading")
                sys.stdout.flush()
                said = True


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "readers":
        readers(args[0], args[1], int(args[2]), int(args[3]), int(args[4]))
    elif cmd == "verify":
        verify(args[0], args[1])
    elif cmd == "hog":
        hog(args[0], int(args[1]))
    else:
        sys.exit("load.py: unknown command %r" % cmd)


if __name__ == "__main__":
    main()
