# tests/difffuzz/worker.py — the subprocess that replays programs on one loop kind: reads length-prefixed pickled
# programs on stdin, answers each with a pickled (events, streams) or the exception that escaped the executor.
#
# Run as `python worker.py KIND` (KIND: a zloop backend name or "asyncio"). Its address space is capped so that
# a runaway allocation in the loop under test is a MemoryError or a crash the parent reports, not a machine swapping;
# not under AddressSanitizer or valgrind (whose shadow memory needs far more address space than the cap), nor with
# ZLOOP_FUZZ_NO_MEMORY_CAP=1.

import asyncio
import os
import pickle
import resource
import struct
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from difffuzz.executor import run_program  # noqa: E402

MEMORY_CAP = 3 << 30


def memory_cap_applies(environ=os.environ):
    """False under ASan or valgrind: make check-asan and tests/valgrind/run.py load their runtime with LD_PRELOAD,
    which the workers inherit."""
    preload = environ.get("LD_PRELOAD", "")
    if "libasan" in preload or "vgpreload" in preload:
        return False
    return environ.get("ZLOOP_FUZZ_NO_MEMORY_CAP", "") in ("", "0")


def loop_factory(kind):
    if kind == "asyncio":
        return asyncio.new_event_loop
    import zloop
    return lambda: zloop.new_event_loop(backend=kind)


def read_exact(stream, size):
    data = stream.read(size)
    return data if len(data) == size else None


def main():
    kind = sys.argv[1]
    if memory_cap_applies():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    warnings.simplefilter("ignore")
    new_loop = loop_factory(kind)
    # Process-wide state made on first use (libuv's signal pipe) is not a program's leak: make it before any baseline.
    warm = new_loop()
    warm.call_soon(warm.stop)
    warm.run_forever()
    warm.close()
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing a callback prints may corrupt the reply stream
    replies.write(b"zlfz")  # ready: the loop kind imported
    replies.flush()
    while True:
        header = read_exact(requests, 4)
        if header is None:
            return
        program = pickle.loads(read_exact(requests, struct.unpack("<I", header)[0]))
        try:
            reply = ("ok", run_program(program, new_loop))
        except BaseException as exc:  # reported to the parent as a finding, with its type
            reply = ("escaped", type(exc).__name__, repr(exc)[:200])
        asyncio.set_event_loop(None)
        blob = pickle.dumps(reply)
        replies.write(struct.pack("<I", len(blob)) + blob)
        replies.flush()


if __name__ == "__main__":
    main()
