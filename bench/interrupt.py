#!/usr/bin/env python3
"""How long linuxdisk-mk takes to exit after SIGINT while it copies a big file, cold cache.

usage: bench/interrupt.py BIN [BIN...]   (as root: it drops the page cache before each run)

Makes TREE (default /var/tmp/ldmk-interrupt/tree: one 3 GiB file of random data, kept for later
runs), then for each threshold (MiB copied into the temp file beside OUTPUT before the signal;
THRESHOLDS, default "300 1500 2800") and each of RUNS runs (default 3) builds TREE with each BIN
in turn, sends SIGINT once the temp file holds that much, and prints the time from the signal
to the exit (waitpid), the exit status and what was left beside OUTPUT.
"""
import glob, os, signal, subprocess, sys, time

work = os.environ.get("WORK", "/var/tmp/ldmk-interrupt")
tree = os.path.join(work, "tree")
out = os.path.join(work, "out")
bins = sys.argv[1:]
if not bins:
    sys.exit(__doc__)
os.makedirs(tree, exist_ok=True)
os.makedirs(out, exist_ok=True)
big = os.path.join(tree, "big")
if not os.path.exists(big) or os.path.getsize(big) != 3 << 30:
    subprocess.run(["sh", "-c", f"head -c 3G /dev/urandom > {big}"], check=True)

def leftovers():
    return glob.glob(os.path.join(out, "*")) + glob.glob(os.path.join(out, ".*"))

def once(binary, threshold):
    for f in leftovers():
        os.remove(f)
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")
    p = subprocess.Popen([binary, tree, os.path.join(out, "out.img")], stderr=subprocess.DEVNULL)
    started = time.monotonic()
    while True:
        temps = glob.glob(os.path.join(out, ".out.img.*.tmp"))
        copied = sum(os.stat(t).st_blocks * 512 for t in temps if os.path.exists(t))
        if copied >= threshold << 20:
            break
        if p.poll() is not None or time.monotonic() - started > 300:
            sys.exit(f"{binary}: did not reach {threshold} MiB")
        time.sleep(0.01)
    t0 = time.monotonic()
    os.kill(p.pid, signal.SIGINT)
    status = p.wait()
    return time.monotonic() - t0, status, copied >> 20

for threshold in map(int, os.environ.get("THRESHOLDS", "300 1500 2800").split()):
    for run in range(int(os.environ.get("RUNS", "3"))):
        for b in bins:
            secs, status, copied = once(b, threshold)
            print(f"{b}: {copied} MiB copied, SIGINT -> exit {status} in {secs:.3f} s, "
                  f"left: {leftovers()}", flush=True)
