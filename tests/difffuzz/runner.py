# tests/difffuzz/runner.py — runs one program on every loop kind at once, one persistent worker subprocess per kind,
# each bounded in time; a crash or hang is an outcome like any other. Compares every zloop kind against asyncio.
#
# A difference is reported only when it shows again on two reruns of the same program (the loops run on real time
# and a loaded machine can delay a timer past the end of a run step); the accepted list (accepted.py) is applied first.

import os
import pickle
import selectors
import signal
import struct
import subprocess
import sys
import tempfile
import time

from difffuzz.accepted import normalise

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
REFERENCE = "asyncio"


class Worker:
    """One subprocess replaying programs on one loop kind; restarted after a crash or a hang."""

    def __init__(self, kind, env):
        self.kind, self.env, self.proc, self.stderr = kind, env, None, None

    def _start(self):
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([sys.executable, WORKER, self.kind], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, env=self.env)
        hello = self._read(4, time.monotonic() + 60)
        if hello != b"zlfz":  # not a finding: the worker cannot even import the loop
            self.stop()
            raise RuntimeError(f"the {self.kind} fuzz worker did not start: {hello}")

    def send(self, blob):
        if self.proc is None:
            self._start()
        try:
            self.proc.stdin.write(struct.pack("<I", len(blob)) + blob)
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # the reply read sees the crash

    def receive(self, deadline):
        """The reply, or ("crash", how, stderr tail) / ("hang", seconds); the worker is replaced after either."""
        header = self._read(4, deadline)
        if isinstance(header, bytes):
            body = self._read(struct.unpack("<I", header)[0], deadline)
            if isinstance(body, bytes):
                return pickle.loads(body)
            header = body
        self.stop()
        return header

    def _read(self, size, deadline):
        out = self.proc.stdout
        chunks, have = [], 0
        with selectors.DefaultSelector() as sel:
            sel.register(out, selectors.EVENT_READ)
            while have < size:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    return ("hang", "no reply in time")
                chunk = os.read(out.fileno(), size - have)
                if not chunk:
                    return self._crash()
                chunks.append(chunk)
                have += len(chunk)
        return b"".join(chunks)

    def _crash(self):
        code = self.proc.wait(timeout=10)
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        self.stderr.seek(0)
        tail = self.stderr.read()[-600:].decode("utf-8", "replace")
        return ("crash", how, tail)

    def stop(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            for stream in (self.proc.stdin, self.proc.stdout, self.stderr):
                stream.close()
            self.proc = None


def run_seconds(program):
    return sum(op[1] for op in program if op[0] == "run") + 0.05 * len(program)


class Fleet:
    """A worker per loop kind; run() replays a program on all of them in parallel."""

    def __init__(self, kinds, env=None, timeout=10.0):
        self.kinds = [REFERENCE] + [k for k in kinds if k != REFERENCE]
        self.workers = {kind: Worker(kind, env) for kind in self.kinds}
        self.timeout = timeout

    def run(self, program):
        blob = pickle.dumps(list(program))
        for worker in self.workers.values():
            worker.send(blob)
        deadline = time.monotonic() + self.timeout + 4 * run_seconds(program)
        return {kind: worker.receive(deadline) for kind, worker in self.workers.items()}

    def close(self):
        for worker in self.workers.values():
            worker.stop()


def first_difference(expected, got):
    """(index, expected item, got item) of the first place two traces differ, or None."""
    for i, (a, b) in enumerate(zip(expected, got)):
        if a != b:
            return i, a, b
    if len(expected) != len(got):
        i = min(len(expected), len(got))
        return i, expected[i] if i < len(expected) else "<end>", got[i] if i < len(got) else "<end>"
    return None


def compare(outcomes):
    """[(kind, signature, text)] for every zloop kind whose observable behaviour differs from asyncio's."""
    reference = outcomes[REFERENCE]
    found = []
    for kind, outcome in outcomes.items():
        if kind == REFERENCE:
            continue
        if outcome[0] != "ok" or reference[0] != "ok":
            if outcome[:2] != reference[:2]:
                found.append((kind, outcome[:2], f"asyncio: {reference[:3]}\n{kind}: {outcome[:3]}"))
            continue
        (ref_events, ref_streams), (events, streams) = normalise(reference[1], outcome[1])
        diff = first_difference(ref_events, events)
        if diff is not None:
            i, a, b = diff
            context = "\n".join(f"    {e}" for e in ref_events[max(0, i - 6):i])
            found.append((kind, ("event", _shape(a), _shape(b)),
                          f"event {i} differs\n  before it (both):\n{context}\n  asyncio: {a}\n  {kind}: {b}"))
        elif ref_streams != streams:
            keys = sorted(set(ref_streams) | set(streams), key=repr)
            key = next(k for k in keys if ref_streams.get(k) != streams.get(k))
            found.append((kind, ("bytes", key[0]), f"bytes on {key}: asyncio {ref_streams.get(key)!r:.200}"
                          f"\n  {kind} {streams.get(key)!r:.200}"))
    return found


def _shape(item):
    """What a finding is, without the indexes that make each program's instance of it unique."""
    if not isinstance(item, tuple):
        return item
    if item[0] == "op":
        return ("op", item[2], item[3:])
    return (item[0],) + tuple(x for x in item[2:] if not isinstance(x, (int, tuple)) or isinstance(x, bool))


def confirmed_differences(fleet, program, attempts=4):
    """Differences of `program` that show on every one of `attempts` runs (their signatures), with the first text."""
    seen = None
    texts = {}
    for _ in range(attempts):
        found = compare(fleet.run(program))
        signatures = {(kind, sig) for kind, sig, _ in found}
        for kind, sig, text in found:
            texts.setdefault((kind, sig), text)
        seen = signatures if seen is None else seen & signatures
        if not seen:
            return []
    return [(kind, sig, texts[(kind, sig)]) for kind, sig in sorted(seen, key=repr)]
