#!/usr/bin/python3
"""NBD protocol checks of `linuxdisk-mk --serve` with python3-libnbd (strict mode off, so that bad
requests reach the server) and, for what libnbd cannot send, a raw socket.

    /usr/bin/python3 protocol.py URI COPY CHECK...

URI: nbd+unix:///EXPORT?socket=PATH of a read-only server; COPY: an nbdcopy of the served disk
(the reference bytes); CHECK: errors, block_status, no_structured, concurrent, opt, raw (which
ends with absurd offsets and lengths on the wire: 2^63, offset+length past 2^64, 2^31 and
2^32-1 bytes, over 32 MiB, block status too, with simple and with structured replies).
Prints one line per problem and exits 1 if there is any (0 when all hold). Needs /usr/bin/python3:
the default python3 here is a pyenv build without the nbd module.
"""

import concurrent.futures
import errno
import hashlib
import socket
import struct
import sys
import time
import urllib.parse

import nbd

URI, COPY = sys.argv[1], sys.argv[2]
CHECKS = sys.argv[3:]
_u = urllib.parse.urlparse(URI)
SOCK = urllib.parse.parse_qs(_u.query)["socket"][0]
EXPORT = urllib.parse.unquote(_u.path[1:])
MAX = 32 << 20
with open(COPY, "rb") as _f:
    DISK = _f.read()
SIZE = len(DISK)

problems = []


def check(ok, msg):
    if not ok:
        problems.append(msg)
    return ok


def handle(structured=True, meta=True):
    h = nbd.NBD()
    h.set_strict_mode(0)
    if not structured:
        h.set_request_structured_replies(False)
    if meta:
        h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    h.connect_uri(URI)
    return h


def expect_errno(what, want, fn):
    try:
        fn()
    except nbd.Error as e:
        return check(e.errnum == want, "%s: error %s (%s), want %s" % (
            what, e.errno, e.string, errno.errorcode[want]))
    return check(False, "%s: succeeded, want %s" % (what, errno.errorcode[want]))


def error_replies(h, tag):
    """Out of range, overflow, oversize, writes on a read-only export; the connection goes on."""
    einval = [
        ("pread at the end", lambda: h.pread(512, SIZE)),
        ("pread of 1 byte at the end", lambda: h.pread(1, SIZE)),
        ("pread straddling the end", lambda: h.pread(4096, SIZE - 512)),
        ("pread with offset+length overflowing 2^64", lambda: h.pread(4096, 2**64 - 512)),
        ("pread at 2^63", lambda: h.pread(4096, 2**63)),
        ("pread of 32 MiB + 1", lambda: h.pread(MAX + 1, 0)),
    ]
    for what, fn in einval:
        expect_errno("%s: %s" % (tag, what), errno.EINVAL, fn)
    if SIZE >= MAX:
        try:
            check(h.pread(MAX, 0) == DISK[:MAX], "%s: pread of 32 MiB: wrong data" % tag)
        except nbd.Error as e:
            check(False, "%s: pread of exactly 32 MiB failed: %s" % (tag, e))
    eperm = [
        ("pwrite 4 KiB", lambda: h.pwrite(b"\xff" * 4096, 0)),
        ("pwrite 1 MiB (payload must be consumed)", lambda: h.pwrite(b"\xee" * (1 << 20), 4096)),
        ("trim", lambda: h.trim(4096, 0)),
        ("zero", lambda: h.zero(4096, 0)),
    ]
    for what, fn in eperm:
        expect_errno("%s: %s on a read-only export" % (tag, what), errno.EPERM, fn)
    try:
        check(h.pread(8192, 0) == DISK[:8192], "%s: data changed after the errors" % tag)
        h.cache(4096, 0)
        check(h.pread(4096, SIZE - 4096) == DISK[-4096:], "%s: last 4 KiB" % tag)
    except nbd.Error as e:
        check(False, "%s: the connection is unusable after error replies: %s" % (tag, e))


def check_errors():
    h = handle()
    error_replies(h, "structured")
    expect_errno("block status at the end", errno.EINVAL,
                 lambda: h.block_status(4096, SIZE, lambda *a: 0))
    expect_errno("block status straddling the end", errno.EINVAL,
                 lambda: h.block_status(8192, SIZE - 4096, lambda *a: 0))
    h.shutdown()


def status_at(h, count, offset, flags=0):
    """One block status call: [(len, flags)] for base:allocation."""
    got = []

    def cb(ctx, off, entries, err):
        check(ctx == nbd.CONTEXT_BASE_ALLOCATION, "block status: context %r" % ctx)
        check(off == offset, "block status: reply for offset %d, asked %d" % (off, offset))
        got.extend(zip(entries[0::2], entries[1::2]))
        return 0

    h.block_status(count, offset, cb, flags)
    return got


def check_block_status():
    h = handle()
    if not check(h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION),
                 "base:allocation not negotiated"):
        return
    walk, off = [], 0
    while off < SIZE:
        ext = status_at(h, min(SIZE - off, 1 << 30), off)
        if not check(len(ext) > 0 and all(n > 0 for n, _ in ext),
                     "block status at %d: empty or zero-length extents %r" % (off, ext[:4])):
            return
        for n, fl in ext:
            check(fl & ~3 == 0, "block status at %d: unknown flags %#x" % (off, fl))
            n = min(n, SIZE - off)
            walk.append((off, n, fl))
            off += n
            if off >= SIZE:
                break
    holes = [(o, n) for o, n, fl in walk if fl & 2]
    check(holes, "block status: no zero extent at all (all data, as nbdkit linuxdisk)")
    for o, n in holes:
        if DISK[o:o + n].count(0) != n:
            check(False, "block status says [%d, +%d) reads as zeros; the disk has data there"
                  % (o, n))
        try:
            if any(h.pread(min(n, MAX), o)):
                check(False, "pread of zero extent [%d, +%d) returned data" % (o, n))
        except nbd.Error as e:
            check(False, "pread of zero extent at %d: %s" % (o, e))
    flags_at = lambda x: next(fl for o, n, fl in walk if o <= x < o + n)
    check(flags_at(0) & 2 == 0, "the protective MBR (offset 0) is reported as zero")
    check(flags_at((1 << 20) + 1024) & 2 == 0, "the superblock (1 MiB + 1024) reported as zero")
    for x in sorted({0, 4096, 65536, 1 << 20, SIZE - 4096} | {o for o, _, _ in walk[:20]}):
        for count in (512, 1 << 20):
            if x + count > SIZE:
                continue
            ext = status_at(h, count, x, nbd.CMD_FLAG_REQ_ONE)
            if check(len(ext) == 1, "REQ_ONE at %d (%d): %d extents" % (x, count, len(ext))):
                n, fl = ext[0]
                check(0 < n <= count, "REQ_ONE at %d: length %d, asked %d" % (x, n, count))
                # The answer may be finer than the walk's, but never false, and a hole stays one.
                if fl & 2:
                    check(DISK[x:x + n].count(0) == n,
                          "REQ_ONE at %d: says %d bytes read as zeros; they hold data" % (x, n))
                check(flags_at(x) & 3 != 3 or fl & 2,
                      "REQ_ONE at %d: flags %d, but the walk says hole,zero" % (x, fl))
    h.shutdown()


def check_no_structured():
    h = handle(structured=False)
    check(not h.get_structured_replies_negotiated(), "structured replies negotiated anyway")
    check(not h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION),
          "base:allocation negotiated without structured replies")
    digest = hashlib.sha256()
    for off in range(0, SIZE, 4 << 20):
        digest.update(h.pread(min(4 << 20, SIZE - off), off))
    check(digest.hexdigest() == hashlib.sha256(DISK).hexdigest(),
          "simple replies: the disk read whole differs from the nbdcopy")
    error_replies(h, "simple")
    h.shutdown()


def read_all(i):
    """One client reading the whole disk with 16 requests of 1 MiB in flight; its hash."""
    h = handle(meta=False)
    offs = list(range(0, SIZE, 1 << 20))
    pending, chunks, nxt = {}, {}, 0
    deadline = time.monotonic() + 120
    while nxt < len(offs) or pending:
        while nxt < len(offs) and len(pending) < 16:
            o = offs[nxt]
            buf = nbd.Buffer(min(1 << 20, SIZE - o))
            pending[h.aio_pread(buf, o)] = (o, buf)
            nxt += 1
        h.poll(1000)
        for c in [c for c in pending if h.aio_command_completed(c)]:
            o, buf = pending.pop(c)
            chunks[o] = bytes(buf.to_bytearray())
        if time.monotonic() > deadline:
            raise TimeoutError("client %d: whole-disk read took over 120 s" % i)
    h.shutdown()
    return hashlib.sha256(b"".join(chunks[o] for o in offs)).hexdigest()


def check_concurrent():
    want = hashlib.sha256(DISK).hexdigest()
    with concurrent.futures.ProcessPoolExecutor(8) as pool:
        for i, f in enumerate([pool.submit(read_all, i) for i in range(8)]):
            try:
                check(f.result(timeout=180) == want,
                      "client %d of 8: its bytes differ from the nbdcopy" % i)
            except Exception as e:  # noqa: BLE001 - report any failure of a client
                check(False, "client %d of 8 failed: %r" % (i, e))


def check_opt():
    h = nbd.NBD()
    h.set_opt_mode(True)
    h.connect_uri(URI)
    check(h.aio_is_negotiating(), "opt mode: not negotiating after connect")
    names = []
    h.opt_list(lambda name, desc: names.append(name) or 0)
    check(names == [EXPORT], "NBD_OPT_LIST: %r, want [%r]" % (names, EXPORT))
    ctxs = []
    h.opt_list_meta_context(lambda c: ctxs.append(c) or 0)
    check(nbd.CONTEXT_BASE_ALLOCATION in ctxs, "LIST_META_CONTEXT: %r" % ctxs)
    h.opt_info()
    check(h.get_size() == SIZE, "NBD_OPT_INFO size %d, want %d" % (h.get_size(), SIZE))
    check(h.is_read_only(), "NBD_OPT_INFO: not read-only")
    sizes = [h.get_block_size(k) for k in (nbd.SIZE_MINIMUM, nbd.SIZE_PREFERRED,
                                            nbd.SIZE_MAXIMUM)]
    check(sizes == [1, 4096, MAX], "NBD_OPT_INFO block sizes %r, want [1, 4096, 32M]" % sizes)
    h.set_export_name("nope")
    try:
        h.opt_info()
        check(False, "NBD_OPT_INFO for an unknown export name succeeded")
    except nbd.Error:
        pass
    check(h.aio_is_negotiating(), "opt mode: negotiation ended after a failed NBD_OPT_INFO")
    h.set_export_name(EXPORT)
    h.opt_go()
    check(h.pread(4096, 0) == DISK[:4096], "read after NBD_OPT_GO")
    h.shutdown()
    h = nbd.NBD()
    h.set_opt_mode(True)
    h.connect_uri(URI)
    h.opt_abort()
    h = nbd.NBD()
    h.set_export_name("nope")
    try:
        h.connect_unix(SOCK)
        check(False, "connecting to export 'nope' succeeded")
    except nbd.Error:
        pass


# --- raw protocol: what libnbd never sends ------------------------------------------------------

IHAVEOPT = 0x49484156454F5054
REQ_MAGIC, SIMPLE_MAGIC, OPT_REPLY_MAGIC = 0x25609513, 0x67446698, 0x3E889045565A9
REP_ACK, REP_INFO, ERR_UNSUP, ERR_POLICY, ERR_UNKNOWN = 1, 3, 2**31 + 1, 2**31 + 2, 2**31 + 6
FLAGS_WANT = {"HAS_FLAGS": 1, "READ_ONLY": 2, "CAN_MULTI_CONN": 1 << 8, "SEND_CACHE": 1 << 10}
FLAGS_NOT = {"SEND_FLUSH": 4, "SEND_TRIM": 1 << 5, "SEND_WRITE_ZEROES": 1 << 6}
SEND_DF = 1 << 7  # set only once structured replies are negotiated (proto.md: MUST leave clear)


def recvn(s, n):
    out = b""
    while len(out) < n:
        b = s.recv(n - len(out))
        if not b:
            raise EOFError("server closed the connection after %d of %d bytes" % (len(out), n))
        out += b
    return out


def raw_connect():
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(SOCK)
    magic, opt, flags = struct.unpack(">QQH", recvn(s, 18))
    check(magic == 0x4E42444D41474943 and opt == IHAVEOPT, "greeting magic %x %x" % (magic, opt))
    check(flags & 3 == 3, "greeting flags %#x lack FIXED_NEWSTYLE|NO_ZEROES" % flags)
    s.sendall(struct.pack(">I", 3))
    return s


def raw_opt(s, code, data=b""):
    """Sends an option; returns its replies [(type, data)] up to the final one."""
    s.sendall(struct.pack(">QII", IHAVEOPT, code, len(data)) + data)
    replies = []
    while True:
        magic, opt, typ, n = struct.unpack(">QIII", recvn(s, 20))
        check(magic == OPT_REPLY_MAGIC and opt == code, "option %d: reply magic %x opt %d"
              % (code, magic, opt))
        replies.append((typ, recvn(s, n)))
        if typ != REP_INFO and typ != 2:  # INFO and SERVER precede the final reply
            return replies


def raw_go(s, structured=False):
    name = EXPORT.encode()
    reps = raw_opt(s, 7, struct.pack(">I", len(name)) + name + struct.pack(">HH", 1, 3))
    check(reps[-1][0] == REP_ACK, "NBD_OPT_GO: final reply %#x" % reps[-1][0])
    info = {struct.unpack(">H", d[:2])[0]: d[2:] for t, d in reps if t == REP_INFO}
    size, flags = struct.unpack(">QH", info.get(0, bytes(10)))
    check(size == SIZE, "NBD_INFO_EXPORT size %d, want %d" % (size, SIZE))
    for k, bit in FLAGS_WANT.items():
        check(flags & bit, "transmission flags %#x lack %s" % (flags, k))
    for k, bit in FLAGS_NOT.items():
        check(not flags & bit, "read-only transmission flags %#x include %s" % (flags, k))
    if structured:
        check(flags & SEND_DF, "flags %#x lack SEND_DF with structured replies" % flags)
    else:
        check(not flags & SEND_DF, "flags %#x have SEND_DF without structured replies "
              "(proto.md: the server MUST leave it clear)" % flags)
    check(struct.unpack(">III", info.get(3, bytes(12))) == (1, 4096, MAX),
          "NBD_INFO_BLOCK_SIZE %r" % (info.get(3),))


def raw_cmd(s, typ, off, n, flags=0, payload=b"", cookie=7):
    s.sendall(struct.pack(">IHHQQI", REQ_MAGIC, flags, typ, cookie, off, n) + payload)
    magic, err, ck = struct.unpack(">IIQ", recvn(s, 16))
    check(magic == SIMPLE_MAGIC and ck == cookie, "simple reply magic %x cookie %d" % (magic, ck))
    data = recvn(s, n) if typ == 0 and err == 0 else b""
    return err, data


def closed(s):
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def check_raw():
    s = raw_connect()
    for code, want, what in [(0x1234, (ERR_UNSUP,), "an unknown option"),
                             (5, (ERR_UNSUP, ERR_POLICY), "NBD_OPT_STARTTLS")]:
        t = raw_opt(s, code, b"abc" if code != 5 else b"")[-1][0]
        check(t in want, "%s: reply %#x, want %s" % (what, t, [hex(w) for w in want]))
    t = raw_opt(s, 6, struct.pack(">I", 4) + b"nope" + struct.pack(">H", 0))[-1][0]
    check(t == ERR_UNKNOWN, "NBD_OPT_INFO for 'nope': reply %#x, want ERR_UNKNOWN" % t)
    raw_go(s)
    EPERM, EINVAL = 1, 22
    for what, args, want in [
        ("READ 512 at 0", (0, 0, 512), 0),
        ("unknown command 0x55", (0x55, 0, 512), EINVAL),
        ("READ with unknown flag 1<<15", (0, 0, 512, 1 << 15), EINVAL),
        ("READ of 32 MiB + 1", (0, 0, MAX + 1), EINVAL),
        ("READ past the end", (0, SIZE, 512), EINVAL),
        ("CACHE 4096 at 0", (5, 0, 4096), 0),
        ("WRITE 64 KiB on a read-only export", (1, 0, 65536, 0, b"\xaa" * 65536), EPERM),
        ("WRITE_ZEROES on a read-only export", (6, 0, 4096), EPERM),
        ("TRIM on a read-only export", (4, 0, 4096), EPERM),
        ("READ 4096 at 1 MiB", (0, 1 << 20, 4096), 0),
    ]:
        err, data = raw_cmd(s, *args)
        check(err == want, "%s: error %d, want %d" % (what, err, want))
        if args[0] == 0 and want == 0:
            check(data == DISK[args[1]:args[1] + args[2]], "%s: wrong data" % what)
    s.sendall(struct.pack(">IHHQQI", REQ_MAGIC, 0, 2, 9, 0, 0))  # NBD_CMD_DISC
    check(closed(s), "the server kept the connection open after NBD_CMD_DISC")
    sr = raw_connect()
    t = raw_opt(sr, 8)[-1][0]  # NBD_OPT_STRUCTURED_REPLY
    check(t == REP_ACK, "NBD_OPT_STRUCTURED_REPLY: reply %#x, want ACK" % t)
    raw_go(sr, structured=True)
    sr.close()
    # A bad request magic ends that connection only; a stalled client stalls nobody.
    bad = raw_connect()
    raw_go(bad)
    stalled = raw_connect()
    raw_go(stalled)
    stalled.sendall(struct.pack(">IHH", REQ_MAGIC, 0, 0))  # half a request header
    bad.sendall(struct.pack(">IHHQQI", 0xDEADBEEF, 0, 0, 1, 0, 512))
    check(closed(bad), "the server kept the connection open after a bad request magic")
    start = time.monotonic()
    h = handle(meta=False)
    check(h.pread(8 << 20, 0) == DISK[:8 << 20], "a client beside a stalled one: wrong data")
    check(time.monotonic() - start < 10, "a client beside a stalled one took over 10 s")
    h.shutdown()
    stalled.close()
    check_raw_absurd()


# Absurd offsets and lengths, sent raw (libnbd refuses most of them client-side): each is
# answered with an error and the connection goes on.
EINVAL_, EPERM_, ENOSPC_ = 22, 1, 28
ABSURD = [
    ("READ at offset 2^63", (0, 2**63, 4096), (EINVAL_,)),
    ("READ at 2^64-512 (offset+length overflows)", (0, 2**64 - 512, 4096), (EINVAL_,)),
    ("READ of 2^32-1 bytes at 2^64-1", (0, 2**64 - 1, 2**32 - 1), (EINVAL_,)),
    ("READ of 2^31 bytes", (0, 0, 2**31), (EINVAL_,)),
    ("READ of 2^32-1 bytes", (0, 0, 2**32 - 1), (EINVAL_,)),
    ("READ of 2^32-1 bytes at 2^63", (0, 2**63, 2**32 - 1), (EINVAL_,)),
    ("READ of 2 bytes at the last byte", (0, "END-1", 2), (EINVAL_,)),
    ("READ of the last byte", (0, "END-1", 1), (0,)),
    ("CACHE at 2^63", (5, 2**63, 4096), (EINVAL_,)),
    ("CACHE of 2^32-1 bytes", (5, 0, 2**32 - 1), (EINVAL_,)),
    ("TRIM at 2^64-512 (overflow)", (4, 2**64 - 512, 4096), (EINVAL_, EPERM_)),
    # Writes past the end: ENOSPC, as the protocol document says and nbdkit answers.
    ("WRITE_ZEROES of 2^32-1 bytes at 2^63", (6, 2**63, 2**32 - 1), (ENOSPC_, EPERM_)),
    ("WRITE of 4 KiB at 2^63", (1, 2**63, 4096, 0, b"\x55" * 4096), (ENOSPC_, EPERM_)),
    ("WRITE of 32 MiB + 1 (payload skipped)", (1, 0, MAX + 1, 0, b"\x66" * (MAX + 1)),
     (EINVAL_, EPERM_)),
]


def absurd_args(args):
    return tuple(SIZE - 1 if a == "END-1" else a for a in args)


def raw_structured(s, typ, off, n, flags=0, payload=b"", cookie=11):
    """Sends a request on a connection with structured replies; returns (errors, data, extents):
    the error numbers of its error chunks, its data chunks assembled (holes as zeros) for READ,
    the (length, flags) descriptors of its block status chunks."""
    s.sendall(struct.pack(">IHHQQI", REQ_MAGIC, flags, typ, cookie, off, n) + payload)
    errors, data, extents = [], {}, []
    while True:
        magic, rflags, rtype, ck, length = struct.unpack(">IHHQI", recvn(s, 20))
        check(magic == 0x668E33EF and ck == cookie,
              "structured reply magic %x cookie %d" % (magic, ck))
        payload = recvn(s, length)
        if rtype == 1:
            data[struct.unpack(">Q", payload[:8])[0]] = payload[8:]
        elif rtype == 2:
            o, k = struct.unpack(">QI", payload[:12])
            data[o] = bytes(k)
        elif rtype == 5:
            d = payload[4:]
            extents += [struct.unpack(">II", d[i:i + 8]) for i in range(0, len(d), 8)]
        elif rtype & 0x8000:
            errors.append(struct.unpack(">I", payload[:4])[0])
        if rflags & 1:
            break
    read = b"".join(data[o] for o in sorted(data))
    check(not data or min(data) == off, "READ at %d: first chunk at %d" % (off, min(data or [0])))
    return errors, read, extents


def raw_structured_connect():
    """A raw connection with structured replies and base:allocation, in transmission."""
    s = raw_connect()
    check(raw_opt(s, 8)[-1][0] == REP_ACK, "NBD_OPT_STRUCTURED_REPLY refused")
    name, q = EXPORT.encode(), nbd.CONTEXT_BASE_ALLOCATION.encode()
    data = struct.pack(">I", len(name)) + name + struct.pack(">II", 1, len(q)) + q
    s.sendall(struct.pack(">QII", IHAVEOPT, 10, len(data)) + data)
    contexts = []
    while True:
        _, _, typ, n = struct.unpack(">QIII", recvn(s, 20))
        body = recvn(s, n)
        if typ == 4:
            contexts.append(body[4:].decode())
        else:
            check(typ == REP_ACK, "NBD_OPT_SET_META_CONTEXT: final reply %#x" % typ)
            break
    check(contexts == [nbd.CONTEXT_BASE_ALLOCATION], "meta contexts %r" % contexts)
    raw_go(s, structured=True)
    return s


def check_raw_absurd():
    s = raw_connect()
    raw_go(s)
    for what, args, want in ABSURD:
        args = absurd_args(args)
        err, data = raw_cmd(s, *args)
        check(err in want, "simple: %s: error %d, want %s" % (what, err, want))
        if args[0] == 0 and err == 0:
            check(data == DISK[args[1]:args[1] + args[2]], "simple: %s: wrong data" % what)
    err, _ = raw_cmd(s, 7, 0, 4096)
    check(err == EINVAL_, "BLOCK_STATUS without structured replies: error %d, want EINVAL" % err)
    err, data = raw_cmd(s, 0, 1 << 20, 4096)
    check(err == 0 and data == DISK[1 << 20:(1 << 20) + 4096],
          "simple: a READ after the absurd requests failed (error %d)" % err)
    s.close()

    s = raw_structured_connect()
    for what, args, want in ABSURD:
        args = absurd_args(args)
        errors, data, _ = raw_structured(s, *args)
        if want == (0,):
            check(not errors and data == DISK[args[1]:args[1] + args[2]],
                  "structured: %s: errors %r or wrong data" % (what, errors))
        else:
            check(len(errors) == 1 and errors[0] in want,
                  "structured: %s: error chunks %r, want one of %s" % (what, errors, want))
    for what, off, n in [("at 2^63", 2**63, 4096),
                         ("at 2^64-512 (overflow)", 2**64 - 512, 4096),
                         ("of 2^32-1 bytes", 0, 2**32 - 1),
                         ("of 2^32-1 bytes at 2^63", 2**63, 2**32 - 1),
                         ("straddling the end", SIZE - 512, 4096)]:
        errors, _, ext = raw_structured(s, 7, off, n)
        check(errors == [EINVAL_] and not ext,
              "BLOCK_STATUS %s: error chunks %r, extents %r, want EINVAL" % (what, errors, ext))
    errors, _, ext = raw_structured(s, 7, SIZE - 4096, 4096)
    check(not errors and ext and 0 < sum(n for n, _ in ext[:1]) <= 4096,
          "BLOCK_STATUS of the last 4 KiB: errors %r, extents %r" % (errors, ext))
    errors, data, _ = raw_structured(s, 0, 1 << 20, 65536, 1 << 2)  # DF
    check(not errors and data == DISK[1 << 20:(1 << 20) + 65536],
          "structured: a READ (DF) after the absurd requests: errors %r or wrong data" % errors)
    s.close()


def main():
    table = {"errors": check_errors, "block_status": check_block_status,
             "no_structured": check_no_structured, "concurrent": check_concurrent,
             "opt": check_opt, "raw": check_raw}
    for name in CHECKS:
        try:
            table[name]()
        except Exception as e:  # noqa: BLE001 - an unexpected failure is a finding too
            problems.append("%s: unexpected %s: %s" % (name, type(e).__name__, e))
    for p in problems:
        print("PROBLEM:", p)
    print("%d problem(s) in %s" % (len(problems), " ".join(CHECKS)))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
