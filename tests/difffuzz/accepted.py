# tests/difffuzz/accepted.py — the only differences from stock asyncio the differential fuzzer tolerates, each with
# why; the same list, in words, is in docs/compatibility.md ("Differences the differential fuzzer accepts").
#
# Each entry rewrites both traces (asyncio's and zloop's) the same way, so whatever it does not cover still counts.

ACCEPTED = []


def accepted(function):
    ACCEPTED.append(function)
    return function


def normalise(reference, got):
    """Both (events, streams) pairs with every accepted difference rewritten away."""
    for rewrite in ACCEPTED:
        reference, got = rewrite(reference), rewrite(got)
    return reference, got


def _rewrite_events(events_and_streams, rewrite):
    events, streams = events_and_streams
    return [rewrite(e) for e in events], streams


@accepted
def add_reader_returns_its_handle(trace):
    """add_reader/add_writer return the Handle they registered (asyncio: None, its private _add_reader returns it).

    A documented zloop extension (docs/compatibility.md): the handle lets a caller see when a reader was replaced or
    removed. No program can depend on asyncio's None, so the fuzzer reads both as None."""
    def rewrite(event):
        if event[0] == "op" and event[2] in ("add_reader", "add_writer") and event[3] == "Handle":
            return event[:3] + (None,)
        return event
    return _rewrite_events(trace, rewrite)


IO_EVENTS = frozenset({"reader", "writer", "data", "eof", "datagram", "error_received", "resume_writing"})


@accepted
def io_order_across_fds(trace):
    """When several fds are ready in one poll, the order of their callbacks is the backend's (epoll's ready list,
    libuv's or libevent's walk); asyncio's own order changes with the selector (epoll, kqueue, poll).

    The events of one fd keep their order; a run of consecutive I/O callbacks (each with the exception-handler calls
    it caused) is sorted by fd, stably. Their order relative to handles and timers is still compared."""
    events, streams = trace
    out, run = [], []

    def flush():
        run.sort(key=lambda unit: repr(unit[0][1]))
        for unit in run:
            out.extend(unit)
        run.clear()

    for event in events:
        if event[0] in IO_EVENTS:
            run.append([event])
        elif event[0] == "exception_handler" and run:
            run[-1].append(event)
        else:
            flush()
            out.append(event)
    flush()
    return out, streams


@accepted
def read_chunking(trace):
    """Bytes a stream transport reads arrive in chunks of the loop's read size and of what the kernel had queued.

    asyncio reads at most 256 KiB at a time; how a stream is cut into data_received calls is not part of its
    contract. The bytes are compared whole (the streams of the trace); here consecutive data_received calls on one
    transport (and consecutive reads of one reader) count as one."""
    events, streams = trace
    out = []
    for event in events:
        if event[0] in ("data", "reader") and len(event) == 2 and out and out[-1] == event:
            continue
        out.append(event)
    return out, streams


@accepted
def asyncio_heap_poisoned_by_a_non_number_deadline(trace):
    """call_at(when) with a `when` that is not a number ("1", None): asyncio's heapq.heappush appends the TimerHandle
    before comparing, so it raises TypeError when another timer is pending (and keeps the handle), or takes it
    silently when none is; from then on every run of asyncio's loop raises TypeError. That is asyncio's bug, not its
    documented behaviour: zloop raises TypeError at once, schedules nothing, and the loop goes on
    (docs/compatibility.md). The executor reports asyncio's silent case as the TypeError too, and the traces are
    compared up to there."""
    events, streams = trace
    for i, event in enumerate(events):
        if event[0] == "op" and event[2] in ("at", "later") and event[3:] in (("raised", "TypeError"),
                                                                               (("raised", "TypeError"),)):
            return events[:i] + [event[:3] + ("raised", "TypeError")], {}
    return events, streams


@accepted
def asyncio_run_fails_on_an_int_deadline_beyond_a_float(trace):
    """call_at(10**400) or call_at(-10**400): asyncio keeps the int, and its run raises OverflowError (when - time())
    as soon as that timer is the nearest; zloop raises OverflowError from call_at, as call_later does in both
    (docs/compatibility.md, "Deliberate differences"). The traces are compared up to that call_at."""
    events, streams = trace
    for i, event in enumerate(events):
        if event[0] == "op" and event[2] == "at" and event[3:] in (("int beyond float",), ("raised", "OverflowError")):
            return events[:i] + [event[:3] + ("raised", "OverflowError")], {}
    return events, streams


@accepted
def where_a_nan_deadline_runs(trace):
    """A NaN deadline compares false with everything: asyncio's heapq leaves the timer wherever the pushes and pops put
    it, so it runs before, among or after the timers due with it, or never while an unreachable timer (inf) sits at
    the heap's root, and the heap invariant is broken for the other timers too (they can run out of deadline order
    while it is pending). zloop runs it as due at once (docs/compatibility.md). The traces are compared up to that
    call."""
    events, streams = trace
    for i, event in enumerate(events):
        if event[0] == "op" and event[2] in ("at", "later") and event[3] == "nan deadline":
            return events[:i + 1], {}
    return events, streams


@accepted
def order_of_timers_with_the_same_deadline(trace):
    """Timers whose deadlines are the same number (call_later(-2**63) twice: the clock is absorbed; call_at(x) twice):
    asyncio's TimerHandle compares the deadline only, and heapq is not stable, so their order is the heap's layout;
    zloop runs them in scheduling order (docs/compatibility.md). A run of consecutive callbacks of one such group
    (each with the exception-handler calls it caused) is sorted by scheduling order in both traces."""
    events, streams = trace
    out, group, key = [], [], None

    def flush():
        group.sort(key=lambda unit: unit[0][1])
        for unit in group:
            out.extend(unit)
        group.clear()

    for event in events:
        tie = event[3] if event[0] == "cb" and len(event) == 4 else None
        if tie is not None and tie == key:
            group.append([event])
        elif event[0] == "exception_handler" and group:
            group[-1].append(event)
        else:
            flush()
            key = tie
            if tie is not None:
                group.append([event])
            else:
                out.append(event)
    flush()
    return out, streams


@accepted
def a_float_water_mark(trace):
    """set_write_buffer_limits(1.5): asyncio keeps any number as a water mark, zloop takes ints only and raises
    TypeError, as for a str (docs/compatibility.md, "Deliberate differences": the C transport keeps its marks as
    Py_ssize_t). The executor reports both as "float water mark"; what follows depends on the marks, so the traces
    are compared up to that call."""
    events, streams = trace
    for i, event in enumerate(events):
        if event[0] == "op" and event[2] == "call" and event[3:] == ("float water mark",):
            return events[:i + 1], {}
    return events, streams
