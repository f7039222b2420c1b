#!/usr/bin/env python3
"""CPython asyncio conformance runner: runs the loop-generic parts of the
interpreter's own test.test_asyncio against a chosen event loop.

Each module runs in its own child process (runner_child.py) with a per-test
timeout; after a hang or crash the module resumes with its remaining tests.
See tests/conformance/README.md for options and the meaning of each column.
"""

import argparse
import json
import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CHILD = os.path.join(HERE, "runner_child.py")
KNOWN_INTERNALS = os.path.join(HERE, "known_internals.txt")

# Default modules (those missing from an interpreter are left out).
# Factory-driven: loops come from a per-class create_event_loop()/new_loop()
# hook, which runner_child.py points at the chosen loop (its FACTORY_MODULES).
FACTORY_MODULES = ("test_events", "test_sock_lowlevel", "test_sendfile",
                   "test_server", "test_buffered_proto", "test_sslproto")
# Policy-driven: loops come from the policy / asyncio.new_event_loop() /
# asyncio.run / Runner / IsolatedAsyncioTestCase.  Not here, as they build
# no loop of the chosen type on any 3.9-3.15 (see README): test_runners,
# test_futures, test_pep492 (mocked BaseEventLoop / TestLoop only).
POLICY_MODULES = ("test_streams", "test_ssl", "test_subprocess",
                  "test_tasks", "test_locks", "test_queues",
                  "test_taskgroups", "test_timeouts", "test_waitfor",
                  "test_threads", "test_futures2", "test_eager_task_factory",
                  "test_staggered", "test_context", "test_free_threading",
                  "test_graph", "test_server_context")
DEFAULT_MODULES = FACTORY_MODULES + POLICY_MODULES
# Rough relative run time, so -j schedules the long modules first.
MODULE_WEIGHT = {"test_events": 50, "test_sslproto": 45, "test_ssl": 30,
                 "test_tasks": 25, "test_sock_lowlevel": 20,
                 "test_subprocess": 20, "test_sendfile": 15,
                 "test_streams": 15, "test_taskgroups": 10}

GRACE = 30.0          # parent backstop beyond the child's own watchdog
_LIVE = set()         # pids (= process groups) of running children
_LIVE_LOCK = threading.Lock()
_STOP = threading.Event()
BAD = ("fail", "error", "hung")
COLUMNS = ("tests", "run", "pass", "fail", "error", "hung", "skip",
           "intern", "loop", "stock")


# ---------------------------------------------------------------- options

def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Run CPython's test.test_asyncio against an event loop.")
    p.add_argument("--loop", default="asyncio",
                   help="asyncio (stock SelectorEventLoop), uvloop, zloop, "
                        "or module:callable (default: asyncio)")
    p.add_argument("--loop-factory", metavar="MODULE:CALLABLE",
                   help="loop factory; overrides --loop")
    p.add_argument("--backend", help="zloop backend: native, uv, event or "
                   "all (passed as backend= to the factory)")
    p.add_argument("--python", default=sys.executable,
                   help="interpreter whose test.test_asyncio to run")
    p.add_argument("--pythonpath", action="append", default=[],
                   help="directory prepended to the child's PYTHONPATH "
                        "(repeatable), e.g. where zloop is built")
    p.add_argument("--modules", default="default",
                   help="comma list of test_asyncio modules (with or "
                        "without test_ prefix), 'default' or 'all'")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="per-test timeout in seconds (default 30); "
                        "test.support's wait bounds are capped at half")
    p.add_argument("-j", "--jobs", type=int,
                   default=min(2, os.cpu_count() or 1),
                   help="modules run in parallel (default: 2, or 1 on a "
                        "single core)")
    p.add_argument("--json", metavar="PATH", help="write results as JSON")
    p.add_argument("--list-failures", action="store_true",
                   help="print failing test ids with the first error line")
    p.add_argument("--control", action="store_true",
                   help="also run stock asyncio and mark shared failures")
    p.add_argument("--report-only", action="store_true",
                   help="always exit 0")
    p.add_argument("--known-internals", default=KNOWN_INTERNALS,
                   help="file of 'test id  # reason' lines to skip")
    p.add_argument("--log-dir", help="keep child logs and work dirs here")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="print every test outcome as it arrives")
    args = p.parse_args(argv)
    if args.loop_factory:
        args.loop = args.loop_factory
    if args.jobs < 1:
        p.error("-j must be >= 1")
    if os.sep in args.python:
        # Children run in their own work directories: a relative path would name nothing there.
        args.python = os.path.abspath(args.python)
    return args


class SetupError(Exception):
    """The run cannot start (bad loop spec, module, internals file)."""


def load_known_internals(path):
    table = {}
    if not path or not os.path.exists(path):
        return table
    with open(path) as fp:
        for lineno, line in enumerate(fp, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            test_id, _, reason = text.partition("#")
            test_id = test_id.strip()
            reason = reason.strip()
            if not reason or len(test_id.split()) != 1:
                raise SetupError("%s:%d: want 'test id  # reason'"
                                 % (path, lineno))
            table[test_id] = reason
    return table


def child_env(args):
    env = dict(os.environ)
    paths = [os.path.abspath(p) for p in args.pythonpath]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def probe(args, loop, backend):
    cmd = [args.python, CHILD, "--probe", "--loop", loop]
    if backend:
        cmd += ["--backend", backend]
    proc = subprocess.run(cmd, env=child_env(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=120)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:]
        sys.stderr.write("".join("  %s\n" % line for line in tail))
        raise SetupError("cannot create a loop with %s%s under %s (is it "
                         "importable there? see --pythonpath)"
                         % (loop, " backend=" + backend if backend else "",
                            args.python))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def select_modules(spec, available):
    if spec == "all":
        return list(available)
    if spec == "default":
        return [m for m in DEFAULT_MODULES if m in available]
    chosen = []
    for name in spec.split(","):
        name = name.strip()
        if not name:
            continue
        if not name.startswith("test_"):
            name = "test_" + name
        if name not in available:
            raise SetupError("no module %s in this interpreter's "
                             "test.test_asyncio" % name)
        chosen.append(name)
    return chosen


# ---------------------------------------------------------------- one module

class ModuleRun:
    """Runs one module to completion, restarting its child after a hang or
    crash with the tests not yet reported."""

    def __init__(self, args, config, module, internals, workdir):
        self.args = args
        self.config = config
        self.module = module
        self.internals = internals
        self.workdir = workdir
        self.ids = None
        self.dropped = []
        self.loop_type = None
        self.backend = None         # loop.get_backend(), if the loop has it
        self.results = {}          # id -> result dict, in arrival order
        self.restarts = 0
        self.wall = 0.0
        self._cur_loops = 0

    # -- child process --------------------------------------------------

    def _spawn(self, attempt):
        tag = "%s-%s-%d" % (self.config["tag"], self.module, attempt)
        skip_path = os.path.join(self.workdir, tag + ".skip.json")
        with open(skip_path, "w") as fp:
            json.dump({"skip": sorted(self.results),
                       "internal": self.internals}, fp)
        hang_path = os.path.join(self.workdir, tag + ".faulthandler")
        log_path = os.path.join(self.workdir, "%s-%s.log"
                                % (self.config["tag"], self.module))
        cwd = os.path.join(self.workdir, tag + ".cwd")
        os.makedirs(cwd, exist_ok=True)
        rfd, wfd = os.pipe()
        cmd = [self.args.python, CHILD, "--module", self.module,
               "--loop", self.config["loop"], "--event-fd", str(wfd),
               "--hang-file", hang_path, "--skip-file", skip_path,
               "--timeout", str(self.args.timeout)]
        if self.config["backend"]:
            cmd += ["--backend", self.config["backend"]]
        log = open(log_path, "ab")
        try:
            proc = subprocess.Popen(cmd, cwd=cwd, env=child_env(self.args),
                                    stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, pass_fds=(wfd,),
                                    start_new_session=True)
        finally:
            os.close(wfd)
            log.close()
        with _LIVE_LOCK:
            _LIVE.add(proc.pid)
        if _STOP.is_set():          # interrupted while spawning
            self._kill_group(proc)
        return proc, rfd, hang_path

    def _kill_group(self, proc):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    @staticmethod
    def _exited(proc):
        """Has the child exited? Leaves it unreaped (a zombie keeps its pid,
        so the later killpg of its group cannot hit a recycled pid)."""
        try:
            info = os.waitid(os.P_PID, proc.pid,
                             os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None

    def _read_events(self, proc, rfd):
        """Yield events until the child exits or falls silent too long.
        Yields {'ev': 'killed'} when the parent had to kill it."""
        buf = [b""]
        last = time.monotonic()
        limit = self.args.timeout + GRACE
        eof = False
        while True:
            if eof:
                time.sleep(0.1)
            elif select.select([rfd], [], [], 0.25)[0]:
                data = os.read(rfd, 1 << 16)
                if data:
                    last = time.monotonic()
                    for ev in self._split_events(buf, data):
                        yield ev
                    continue
                eof = True
            if self._exited(proc):
                # The child may have written just before exiting.
                while not eof and select.select([rfd], [], [], 0)[0]:
                    data = os.read(rfd, 1 << 16)
                    eof = not data
                    for ev in self._split_events(buf, data):
                        yield ev
                return
            if time.monotonic() - last > limit:
                self._kill_group(proc)
                yield {"ev": "killed"}
                return

    @staticmethod
    def _split_events(buf, data):
        lines = (buf[0] + data).split(b"\n")
        buf[0] = lines.pop()
        events = []
        for line in lines:
            try:
                events.append(json.loads(line.decode("utf-8", "replace")))
            except ValueError:
                pass            # blank, or garbage from a forked grandchild
        return events

    # -- bookkeeping ----------------------------------------------------

    def _store(self, res):
        self.results[res["id"]] = res
        if self.args.verbose:
            sys.stderr.write("  [%s] %-5s %s %s\n" % (
                self.config["label"], res["outcome"], res["id"],
                res.get("summary", "") if res["outcome"] in BAD else ""))

    def _abnormal(self, cur, killed, proc, hang_path, elapsed):
        try:
            with open(hang_path, errors="replace") as fp:
                dump = fp.read()
        except OSError:
            dump = ""
        hung = killed or "Timeout (" in dump
        if hung:
            summary = "hung: no result after %gs%s" % (
                self.args.timeout, where_hung(dump))
        else:
            summary = "crashed: %s" % crash_reason(dump, proc.returncode)
        outcome = "hung" if hung else "error"
        cur_known = cur is not None
        if cur is None:
            last = list(self.results)[-1] if self.results else "start"
            cur = "<%s> after %s" % ("hang" if hung else "crash", last)
        self._store({"id": cur, "outcome": outcome, "summary": summary,
                     "detail": dump[-8000:],
                     "loops": self._cur_loops if cur_known else 0,
                     "foreign": 0,
                     "dur": round(elapsed, 3)})

    def run(self):
        t0 = time.monotonic()
        attempt = 0
        while not _STOP.is_set():
            attempt += 1
            before = len(self.results)
            cur, done, killed, cur_t0, proc, hang_path = self._attempt(attempt)
            if done:
                break
            progressed = len(self.results) > before
            self._abnormal(cur, killed, proc, hang_path,
                           time.monotonic() - cur_t0)
            self.restarts += 1
            if self.ids is None or (cur is None and not progressed):
                break       # crashed before listing, or no progress at all
            if attempt > len(self.ids) + 5:
                break
            if all(i in self.results for i in self.ids):
                break
        self._mark_not_run()
        self.wall = time.monotonic() - t0

    def _attempt(self, attempt):
        proc, rfd, hang_path = self._spawn(attempt)
        cur, cur_t0, done, killed = None, time.monotonic(), False, False
        cur_loops = 0
        try:
            for ev in self._read_events(proc, rfd):
                kind = ev.pop("ev")
                if kind == "list":
                    if self.ids is None:
                        self.ids = ev["ids"]
                        self.dropped = ev["dropped"]
                        self.loop_type = ev["loop_type"]
                        self.backend = ev.get("backend")
                elif kind == "start":
                    cur, cur_t0 = ev["id"], time.monotonic()
                    cur_loops = 0
                elif kind == "loop":
                    cur_loops = 1
                elif kind == "end":
                    self._store(ev)
                    cur = None
                elif kind == "done":
                    done = True
                elif kind == "killed":
                    killed = True
        finally:
            os.close(rfd)
            self._kill_group(proc)      # its leftovers too, e.g. subprocesses
            proc.wait()
            with _LIVE_LOCK:
                _LIVE.discard(proc.pid)
        self._cur_loops = cur_loops
        return cur, done, killed, cur_t0, proc, hang_path

    def _mark_not_run(self):
        for test_id in self.ids or ():
            if test_id in self.results:
                continue
            outcome, summary = "error", "not run (earlier crash or fixture " \
                                        "failure in this module)"
            for fid, res in self.results.items():
                if fid.startswith("<fixture>") and fixture_covers(fid,
                                                                  test_id):
                    if res["outcome"] == "skip":
                        outcome, summary = "skip", res["summary"]
                    else:
                        summary = "not run: %s failed" % fid
                    break
            self._store({"id": test_id, "outcome": outcome,
                         "summary": summary, "detail": "", "loops": 0,
                         "foreign": 0, "dur": 0})

    def counts(self):
        c = dict((k, 0) for k in COLUMNS)
        c["tests"] = len(self.results)
        for res in self.results.values():
            outcome = res["outcome"]
            key = {"pass": "pass", "fail": "fail", "error": "error",
                   "hung": "hung", "skip": "skip",
                   "internal": "intern"}[outcome]
            c[key] += 1
            if outcome in ("pass",) + BAD:
                c["run"] += 1
            if res.get("loops"):
                c["loop"] += 1
            if res.get("foreign"):
                c["stock"] += 1
        return c

    def to_json(self):
        return {"counts": self.counts(), "loop_type": self.loop_type,
                "backend": self.backend,
                "dropped_classes": self.dropped, "restarts": self.restarts,
                "wall": round(self.wall, 2), "tests": self.results}


def fixture_covers(fixture_id, test_id):
    """'<fixture> setUpClass (test_x.Cls)' covers 'test_x.Cls.test_y'."""
    inside = fixture_id.partition("(")[2].rstrip(")")
    return bool(inside) and (test_id == inside or
                             test_id.startswith(inside + "."))


def dump_threads(dump):
    """faulthandler dump -> list of per-thread frame lists, innermost first:
    each frame is (path, lineno, func)."""
    threads = []
    for line in dump.splitlines():
        text = line.strip()
        if text.startswith(("Thread 0x", "Current thread 0x", "Stack (")):
            threads.append([])
        elif text.startswith("File ") and threads:
            try:
                path = text.split('"')[1]
                lineno = text.split("line ")[1].split()[0]
                func = text.rsplit(" in ", 1)[1]
            except IndexError:
                continue
            threads[-1].append((path, lineno, func))
    return threads


def where_hung(dump):
    """' at test_x.py:123 (func), innermost y.py:45 (g)' for the thread that
    was running the test, from a faulthandler dump."""
    def fmt(frame):
        return "%s:%s (%s)" % (os.path.basename(frame[0]), frame[1], frame[2])

    def is_test_file(path):
        return "test_asyncio" in path and \
            os.path.basename(path).startswith("test_")

    for frames in dump_threads(dump):
        tests = [f for f in frames if is_test_file(f[0])]
        if not tests:
            continue
        text = " at " + fmt(tests[0])
        if frames[0] != tests[0]:
            text += ", innermost " + fmt(frames[0])
        return text
    return ""


def crash_reason(dump, returncode):
    for line in dump.splitlines():
        if line.startswith("Fatal Python error"):
            return line.strip()
    if returncode is not None and returncode < 0:
        try:
            return "killed by %s" % signal.Signals(-returncode).name
        except ValueError:
            return "killed by signal %d" % -returncode
    return "child exited with status %s without finishing" % returncode


# ---------------------------------------------------------------- configs

def run_config(args, config, modules, internals, workdir):
    runs = dict((m, ModuleRun(args, config, m, internals, workdir))
                for m in modules)
    order = sorted(modules, key=lambda m: -MODULE_WEIGHT.get(m, 1))
    work = queue.Queue()
    for m in order:
        work.put(m)

    def worker():
        while True:
            try:
                m = work.get_nowait()
            except queue.Empty:
                return
            if _STOP.is_set():
                return
            try:
                runs[m].run()
            except Exception as exc:
                # Counted as a failure: a module the runner could not run must not read as a clean one.
                runs[m]._store({"id": "<runner> " + m, "outcome": "error",
                                "summary": "runner failed: %r" % exc,
                                "detail": "", "loops": 0, "foreign": 0,
                                "dur": 0})
            c = runs[m].counts()
            sys.stderr.write("[%s] %-24s %4d run %4d fail %3d err %3d hung "
                             "%5.1fs\n" % (config["label"], m, c["run"],
                                           c["fail"], c["error"], c["hung"],
                                           runs[m].wall))
            sys.stderr.flush()

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, daemon=True)
               for _ in range(min(args.jobs, len(modules)))]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.5)
    config["wall"] = time.monotonic() - t0
    config["runs"] = [runs[m] for m in modules]
    return config


def stop_children(*_unused):
    """On Ctrl-C / SIGTERM: stop scheduling and kill our children's groups."""
    _STOP.set()
    with _LIVE_LOCK:
        pids = list(_LIVE)
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def on_sigterm(signum, frame):
    raise KeyboardInterrupt


def make_configs(args, info):
    loop = args.loop
    if loop == "zloop":
        loop = "zloop:new_event_loop"
    backends = [args.backend] if args.backend else [None]
    if args.backend == "all":
        if not info.get("backends"):
            raise SetupError("--backend all: %s exposes no backends()"
                             % loop)
        backends = info["backends"]
    configs = []
    for backend in backends:
        label = args.loop if backend is None else \
            "%s[%s]" % (args.loop, backend)
        configs.append({"label": label, "tag": safe_tag(label),
                        "loop": loop, "backend": backend, "control": False})
    return configs


def safe_tag(label):
    return "".join(ch if ch.isalnum() else "_" for ch in label)


# ---------------------------------------------------------------- report

def print_table(config, control_failing):
    runs = config["runs"]
    backend = ""
    if config.get("got_backend"):
        backend = ", get_backend()=" + config["got_backend"]
    print("\n== %s  (%s%s, Python %s)  wall %.1fs" % (
        config["label"], config.get("loop_type") or "?", backend,
        config.get("python_version", "?"), config["wall"]))
    header = "%-26s" % "module" + "".join("%7s" % c for c in COLUMNS)
    if control_failing is not None:
        header += "%9s" % "ctl-bad"
    print(header)
    total = dict((k, 0) for k in COLUMNS)
    total_ctl = 0
    for run in runs:
        c = run.counts()
        line = "%-26s" % run.module + "".join("%7d" % c[k] for k in COLUMNS)
        if control_failing is not None:
            shared = sum(1 for i, r in run.results.items()
                         if r["outcome"] in BAD and
                         (run.module, i) in control_failing)
            total_ctl += shared
            line += "%9d" % shared
        print(line)
        for k in COLUMNS:
            total[k] += c[k]
    line = "%-26s" % "TOTAL" + "".join("%7d" % total[k] for k in COLUMNS)
    if control_failing is not None:
        line += "%9d" % total_ctl
    print(line)
    return total


def warn_stale_internals(internals, configs):
    """Known-internals ids absent from a module that ran (renamed tests)."""
    ran = {}
    for cfg in configs:
        for run in cfg["runs"]:
            ran.setdefault(run.module, set()).update(run.ids or ())
    for test_id in sorted(internals):
        module = test_id.split(".")[0]
        if module in ran and test_id not in ran[module]:
            sys.stderr.write("note: known_internals entry %s names no test "
                             "of this Python's %s\n" % (test_id, module))


def failing_set(config):
    bad = set()
    for run in config["runs"]:
        for test_id, res in run.results.items():
            if res["outcome"] in BAD:
                bad.add((run.module, test_id))
    return bad


def print_failures(config, control_failing):
    print("\n-- failures: %s" % config["label"])
    for run in config["runs"]:
        for test_id, res in run.results.items():
            if res["outcome"] not in BAD:
                continue
            mark = ""
            if control_failing is not None and \
                    (run.module, test_id) in control_failing:
                mark = "  [also fails on control]"
            print("%-5s %s: %s%s" % (res["outcome"].upper(), test_id,
                                     res.get("summary", ""), mark))


def write_json(path, args, info, configs, control):
    def dump_config(cfg, control_failing):
        out = {"label": cfg["label"], "loop": cfg["loop"],
               "backend": cfg["backend"], "loop_type": cfg.get("loop_type"),
               "get_backend": cfg.get("got_backend"),
               "wall": round(cfg["wall"], 2), "modules": {}}
        for run in cfg["runs"]:
            data = run.to_json()
            if control_failing is not None:
                for test_id, res in data["tests"].items():
                    if res["outcome"] in BAD:
                        res["fails_on_control"] = \
                            (run.module, test_id) in control_failing
            out["modules"][run.module] = data
        return out

    control_failing = failing_set(control) if control else None
    doc = {"python": info["python"], "python_version": info["version"],
           "timeout": args.timeout, "jobs": args.jobs,
           "runs": [dump_config(c, control_failing) for c in configs],
           "control": dump_config(control, None) if control else None}
    with open(path, "w") as fp:
        json.dump(doc, fp, indent=1, sort_keys=False)


# ---------------------------------------------------------------- main

def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        internals = load_known_internals(args.known_internals)
        backend = None if args.backend == "all" else args.backend
        info = probe(args, "zloop:new_event_loop" if args.loop == "zloop"
                     else args.loop, backend)
        modules = select_modules(args.modules, info["modules"])
        configs = make_configs(args, info)
    except (SetupError, OSError, ValueError,
            subprocess.SubprocessError) as exc:
        sys.stderr.write("run.py: %s\n" % exc)
        return 0 if args.report_only else 2
    control = None
    if args.control:
        control = {"label": "asyncio (control)", "tag": "control",
                   "loop": "asyncio", "backend": None, "control": True}

    workdir = args.log_dir or tempfile.mkdtemp(prefix="zloop-conformance-")
    os.makedirs(workdir, exist_ok=True)
    sys.stderr.write("python %s (%s); modules: %s; logs in %s\n" % (
        info["version"], info["python"], ",".join(modules), workdir))
    t0 = time.monotonic()
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        for cfg in configs + ([control] if control else []):
            cfg["python_version"] = info["version"]
            run_config(args, cfg, modules, internals, workdir)
            types = set(r.loop_type for r in cfg["runs"] if r.loop_type)
            cfg["loop_type"] = ",".join(sorted(types))
            got = set(r.backend for r in cfg["runs"] if r.backend)
            cfg["got_backend"] = ",".join(sorted(got)) or None
            if cfg["backend"] and got and got != {cfg["backend"]}:
                sys.stderr.write("WARNING: asked for backend %s, loops "
                                 "report get_backend() = %s\n"
                                 % (cfg["backend"], cfg["got_backend"]))
    except KeyboardInterrupt:
        stop_children()
        sys.stderr.write("interrupted; children killed\n")
        return 130
    finally:
        if not args.log_dir:
            shutil.rmtree(workdir, ignore_errors=True)
    total_wall = time.monotonic() - t0

    warn_stale_internals(internals, configs)
    control_failing = failing_set(control) if control else None
    bad_total = 0
    for cfg in configs:
        total = print_table(cfg, control_failing)
        bad_total += total["fail"] + total["error"] + total["hung"]
    if control:
        print_table(control, None)
    if args.list_failures:
        for cfg in configs:
            print_failures(cfg, control_failing)
        if control:
            print_failures(control, None)
    print("\ntotal wall time %.1fs; %d failing (fail+error+hung) outside "
          "known internals" % (total_wall, bad_total))
    if args.json:
        write_json(args.json, args, info, configs, control)
    if args.report_only:
        return 0
    return 1 if bad_total else 0


if __name__ == "__main__":
    sys.exit(main())
