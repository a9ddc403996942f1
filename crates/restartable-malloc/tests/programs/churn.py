# Threads churning dicts, lists and strings; objects made in one thread are dropped in
# another (through a queue). Prints results that depend only on the work, not on the
# allocator or the schedule. usage: churn.py [rounds]
import queue
import sys
import threading

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 40
THREADS = 4
# A short queue: each item holds about 2 MB, so with 64 places the peak RSS measured
# how far the consumer happened to fall behind (about 95 or 200 MB from run to run,
# under every allocator); with 4 it measures the allocators.
handoff = queue.Queue(maxsize=4)
results = {}


def work(t):
    total = 0
    for r in range(ROUNDS):
        d = {}
        for i in range(2000):
            key = "k%d-%d-%d" % (t, r, i)
            d[key] = [i, str(i) * (i % 7), {"x": i, "y": key[::-1]}]
        words = " ".join(k for k in d if k.endswith("7")).split()
        words.sort(key=lambda w: (len(w), w))
        text = "|".join(words).upper().replace("K", "q")
        total += len(text) + sum(len(v[1]) for v in d.values())
        big = [bytes(range(256)) * (1 + i % 40) for i in range(300)]
        total += sum(len(b) for b in big[::3])
        handoff.put((dict(d), big))
        for k in list(d)[::2]:
            del d[k]
        total += len(d)
    results[t] = total


def drain():
    n = 0
    while True:
        item = handoff.get()
        if item is None:
            break
        d, big = item
        n += len(d) + len(big)
    results["drained"] = n


consumer = threading.Thread(target=drain)
consumer.start()
workers = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
for w in workers:
    w.start()
for w in workers:
    w.join()
handoff.put(None)
consumer.join()
for k in sorted(results, key=str):
    print(k, results[k])
