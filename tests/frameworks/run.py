#!/usr/bin/env python3
"""Framework-suite runner: runs the test suites of uvicorn, AnyIO and aiohttp (pinned release sdists, see
pins.txt) twice — on stock asyncio as the control and on zloop — and compares the two failure sets.

Each framework gets a venv of its own under the cache dir (made once, reused while its pin and requirements
are unchanged) with the package built from its sdist, its test requirements and pytest-timeout; zloop is
taken from --pythonpath. inject/ on PYTHONPATH plugs zloop into each suite's own loop hooks and records
every test's outcome and the loops it ran. Exit status: 0 when every zloop failure set equals the control's,
1 when one differs (or a run did not complete, or ran no zloop loop), 2 when setting up failed.
See tests/frameworks/README.md.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
INJECT = os.path.join(HERE, "inject")
PINS = os.path.join(HERE, "pins.txt")
STAMP_VERSION = 2
BAD = ("failed", "error", "timeout", "crashed")

# How each framework declares its test requirements and runs its suite. requirements: ("group", NAME) for a
# pyproject [dependency-groups] entry, ("file", PATH) for a pip requirements file (-r followed).
# xdist: the project runs its own suite with pytest-xdist (so -n is safe). args: extra pytest arguments.
FRAMEWORKS = {
    "uvicorn": {
        "requirements": [("group", "dev")],
        "xdist": True,
        "timeout": 60,
        "args": [],
    },
    "anyio": {
        "requirements": [("group", "test")],
        "xdist": False,
        "timeout": 60,
        "args": [],
    },
    "aiohttp": {
        "requirements": [("file", "requirements/test.in")],
        "xdist": True,
        "timeout": 60,
        # Its addopts load coverage and doctests of the tests dir; keep only its default marker selection.
        "args": ["-o", "addopts=", "--strict-markers",
                 "-m", "not dev_mode and not autobahn and not internal"],
    },
}
ALWAYS_INSTALL = ["pytest-timeout"]
XDIST_REQUIREMENT = "pytest-xdist"


# ---------------------------------------------------------------- options

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frameworks", default="all",
                   help="comma-separated names from pins.txt, or all (default)")
    p.add_argument("--backend", default=os.environ.get("ZLOOP_BACKEND") or "native",
                   help="native, uv, event, a comma-separated list, or all compiled ones "
                        "(default: $ZLOOP_BACKEND, else native)")
    p.add_argument("--cache", default=os.environ.get("ZLOOP_FW_CACHE") or "/tmp/zloop-frameworks",
                   help="sdists, sources, venvs, logs and results (default: $ZLOOP_FW_CACHE, else "
                        "/tmp/zloop-frameworks)")
    p.add_argument("--pythonpath", default=os.path.join(REPO, "python"),
                   help="directory holding the built zloop package (default: <repo>/python)")
    p.add_argument("--python", default=sys.executable,
                   help="interpreter for the venvs; zloop must be built for it (default: this one)")
    p.add_argument("--json", metavar="FILE", help="write the full results as JSON to FILE")
    p.add_argument("--markdown", metavar="FILE",
                   help="write the results table (per framework and backend) as Markdown to FILE")
    p.add_argument("--min-zloop-share", type=float, default=0.9,
                   help="a zloop run fails when fewer than this share of its tests that ran an asyncio or "
                        "zloop loop ran a zloop one (default 0.9)")
    p.add_argument("--timeout", type=float, default=None,
                   help="per-test timeout in seconds (default: per framework, 60)")
    p.add_argument("--suite-timeout", type=float, default=1800.0,
                   help="bound on one run of one suite in seconds (default 1800)")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="pytest-xdist workers for suites that use xdist; 0 turns xdist off (default 2)")
    p.add_argument("--no-control", action="store_true",
                   help="skip the control run (nothing to compare; exit status from zloop usage only)")
    p.add_argument("--recheck", type=int, default=1,
                   help="rerun each differing test this many times in both modes to tell a steady "
                        "difference from a flaky one (default 1; 0 = off)")
    p.add_argument("--strict", action="store_true",
                   help="a flaky difference fails the run too")
    p.add_argument("--policy", action="store_true",
                   help="in the zloop runs also install zloop's event loop policy (as zloop.install()), so "
                        "asyncio.new_event_loop()/asyncio.run() in tests give zloop loops too; tests that "
                        "check for the stock default loop then fail by design")
    p.add_argument("--setup-only", action="store_true", help="fetch and install, run nothing")
    p.add_argument("--refresh", action="store_true", help="rebuild the venvs even when they look current")
    p.add_argument("--pytest-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for every pytest run (repeatable), e.g. a node id or -k EXPR")
    return p.parse_args(argv)


# ---------------------------------------------------------------- pins

def read_pins(path=PINS):
    """{name: {"version", "skip": {normalized name: reason}, "deselect": [(nodeid, reason)]}}, file order."""
    pins = {}
    current = None
    with open(path, encoding="utf-8") as f:
        for number, raw in enumerate(f, 1):
            text, _, reason = raw.partition("#")
            if not text.strip():
                continue
            where = f"{path}:{number}"
            if not raw[0].isspace():
                name, sep, version = text.strip().partition("==")
                if not sep or not version:
                    raise SystemExit(f"{where}: expected name==version")
                current = pins[name.lower()] = {"name": name, "version": version, "skip": {},
                                                "deselect": []}
                continue
            if current is None:
                raise SystemExit(f"{where}: indented line before any pin")
            key, _, value = text.strip().partition(" ")
            if not reason.strip():
                raise SystemExit(f"{where}: {key} needs a '# reason'")
            if key == "skip-requirement":
                current["skip"][normalize(value.strip())] = reason.strip()
            elif key == "deselect":
                current["deselect"].append((value.strip(), reason.strip()))
            else:
                raise SystemExit(f"{where}: unknown key {key!r}")
    return pins


def normalize(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement):
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return normalize(match.group(1)) if match else ""


# ---------------------------------------------------------------- fetching and installing

def log(message):
    print(message, flush=True)


def run_logged(cmd, logfile, **kwargs):
    """Run cmd with its output appended to logfile; raise SystemExit(2) with the log's tail on failure."""
    with open(logfile, "a", encoding="utf-8") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        rc = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kwargs)
    if rc != 0:
        with open(logfile, encoding="utf-8", errors="replace") as f:
            tail = f.readlines()[-30:]
        sys.stderr.write("".join(tail))
        raise SystemExit(f"setup failed (exit {rc}): {' '.join(cmd)}; log: {logfile}")


def fetch_source(pin, cache, python, logdir):
    """The unpacked sdist of the pin, downloaded with pip into cache/sdist when missing."""
    name, version = pin["name"], pin["version"]
    src = os.path.join(cache, "src", f"{name}-{version}")
    if os.path.isfile(os.path.join(src, "PKG-INFO")):
        return src
    sdists = os.path.join(cache, "sdist")
    os.makedirs(sdists, exist_ok=True)
    archive = find_sdist(sdists, name, version)
    if archive is None:
        log(f"[{name}] downloading {name}=={version} sdist")
        run_logged([python, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
                    "--disable-pip-version-check", "-d", sdists, f"{name}=={version}"],
                   os.path.join(logdir, f"{name}-setup.log"))
        archive = find_sdist(sdists, name, version)
        if archive is None:
            raise SystemExit(f"pip download left no sdist for {name}=={version} in {sdists}")
    unpack(archive, src)
    return src


def find_sdist(folder, name, version):
    stem = normalize(name).replace("-", "_")
    for entry in os.listdir(folder):
        if not entry.endswith((".tar.gz", ".zip")):
            continue
        base = entry[:-7] if entry.endswith(".tar.gz") else entry[:-4]
        entry_name, _, entry_version = base.rpartition("-")
        if normalize(entry_name).replace("-", "_") == stem and entry_version == version:
            return os.path.join(folder, entry)
    return None


def unpack(archive, dest):
    tmp = dest + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    with tarfile.open(archive) as tar:
        tar.extractall(tmp, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(tmp)
    entries = os.listdir(tmp)
    top = os.path.join(tmp, entries[0]) if len(entries) == 1 else tmp
    shutil.rmtree(dest, ignore_errors=True)
    os.rename(top, dest)
    shutil.rmtree(tmp, ignore_errors=True)


def test_requirements(name, src, pin):
    """(extras, requirements): the framework's test requirements as pip arguments, less pins.txt's
    skip-requirement names; a requirement on the framework itself (uvicorn's "uvicorn[standard]") is
    dropped and its extras returned, for the editable install of the sdist."""
    requirements = []
    for kind, value in FRAMEWORKS[name]["requirements"]:
        if kind == "group":
            requirements += dependency_group(os.path.join(src, "pyproject.toml"), value)
        else:
            requirements += requirements_file(os.path.join(src, value))
    result = []
    extras = set()
    own = normalize(pin["name"])
    for requirement in requirements:
        req_name = requirement_name(requirement)
        if req_name in pin["skip"]:
            continue
        if req_name == own:
            listed = re.match(r"\s*[A-Za-z0-9._-]+\s*(?:\[([^\]]*)\])?", requirement).group(1) or ""
            extras.update(e.strip() for e in listed.split(",") if e.strip())
            continue
        if requirement not in result:
            result.append(requirement)
    return sorted(extras), result


def dependency_group(pyproject, group, seen=()):
    import tomllib
    with open(pyproject, "rb") as f:
        groups = tomllib.load(f).get("dependency-groups", {})
    if group not in groups:
        raise SystemExit(f"{pyproject}: no dependency group {group!r}")
    result = []
    for entry in groups[group]:
        if isinstance(entry, dict) and "include-group" in entry:
            if entry["include-group"] not in seen:
                result += dependency_group(pyproject, entry["include-group"], seen + (group,))
        else:
            result.append(" ".join(entry.split()))
    return result


def requirements_file(path):
    result = []
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.split(" #")[0].strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith(("-r ", "--requirement ")):
                result += requirements_file(os.path.join(os.path.dirname(path), line.split(None, 1)[1]))
            elif line.startswith("-"):
                continue  # -c constraints, index options: not for a test venv
            else:
                result.append(line)
    return result


def ensure_venv(name, pin, src, args, logdir):
    """A venv with the framework from src and its test requirements; reused when its stamp matches."""
    spec = FRAMEWORKS[name]
    extras, requirements = test_requirements(name, src, pin)
    requirements += ALWAYS_INSTALL
    if spec["xdist"] and XDIST_REQUIREMENT not in (requirement_name(r) for r in requirements):
        requirements.append(XDIST_REQUIREMENT)
    python_tag = subprocess.check_output(
        [args.python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], text=True).strip()
    stamp = {"stamp": STAMP_VERSION, "version": pin["version"], "python": os.path.realpath(args.python),
             "extras": extras, "requirements": requirements}
    venv = os.path.join(args.cache, "venv", f"{name}-{pin['version']}-py{python_tag}")
    stamp_path = os.path.join(venv, "zloop-fw-stamp.json")
    if not args.refresh and os.path.isfile(stamp_path):
        with open(stamp_path, encoding="utf-8") as f:
            if json.load(f) == stamp:
                return venv
    logfile = os.path.join(logdir, f"{name}-setup.log")
    log(f"[{name}] creating venv {venv} (log: {logfile})")
    shutil.rmtree(venv, ignore_errors=True)
    run_logged([args.python, "-m", "venv", venv], logfile)
    vpython = os.path.join(venv, "bin", "python")
    pip = [vpython, "-m", "pip", "--disable-pip-version-check", "install"]
    run_logged(pip + ["--upgrade", "pip"], logfile)
    # The package first, built from the sdist (aiohttp compiles its C extensions here), then the tests'.
    # Editable, as the projects test themselves: tests that start a fresh interpreter in the source dir
    # (aiohttp's test_circular_imports) import the same build as the tests themselves.
    run_logged(pip + ["-e", src + (f"[{','.join(extras)}]" if extras else "")], logfile)
    run_logged(pip + requirements, logfile)
    with open(stamp_path, "w", encoding="utf-8") as f:
        json.dump(stamp, f, indent=1)
    return venv


# ---------------------------------------------------------------- running a suite

def pytest_command(name, pin, venv, args, basetemp, nodeids=None):
    spec = FRAMEWORKS[name]
    cmd = [os.path.join(venv, "bin", "pytest"), "-p", "zloop_fw_plugin", "-p", "no:cacheprovider",
           "--basetemp", basetemp, "--timeout", str(args.timeout or spec["timeout"])]
    cmd += spec["args"]
    use_xdist = spec["xdist"] and args.jobs > 0 and not nodeids
    if use_xdist:
        # A test that hangs in C code ignores SIGALRM; the thread method ends its worker, xdist replaces it.
        cmd += ["-n", str(args.jobs), "--timeout-method", "thread"]
    else:
        cmd += ["-n", "0"] if spec["xdist"] else []
        cmd += ["--timeout-method", "signal"]
    for nodeid, _reason in pin["deselect"]:
        cmd += ["--deselect", nodeid]
    cmd += args.pytest_arg
    cmd += list(nodeids or [])
    return cmd


def run_suite(name, pin, venv, src, args, mode, backend, tag, nodeids=None):
    """One pytest run; returns its summary with the outcome of every test."""
    limit = args.suite_timeout
    if nodeids:
        per_test = args.timeout or FRAMEWORKS[name]["timeout"]
        limit = min(limit, 120 + per_test * len(nodeids))
    rundir = os.path.join(args.cache, "runs")
    os.makedirs(rundir, exist_ok=True)
    label = f"{name}-{mode}" + (f"-{backend}" if backend else "") + tag
    results = os.path.join(rundir, label + ".jsonl")
    logfile = os.path.join(rundir, label + ".log")
    for path in (results, logfile):
        if os.path.exists(path):
            os.unlink(path)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([INJECT, os.path.abspath(args.pythonpath)])
    env["ZLOOP_FW_MODE"] = mode
    env["ZLOOP_FW_RESULTS"] = results
    env.pop("ZLOOP_BACKEND", None)
    env.pop("ZLOOP_FW_POLICY", None)
    if mode == "zloop" and args.policy:
        env["ZLOOP_FW_POLICY"] = "1"
    if backend:
        env["ZLOOP_BACKEND"] = backend
    os.makedirs(os.path.join(args.cache, "tmp"), exist_ok=True)
    cmd = pytest_command(name, pin, venv, args, os.path.join(args.cache, "tmp", label), nodeids)
    started = time.monotonic()
    with open(logfile, "w", encoding="utf-8") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        proc = subprocess.Popen(cmd, cwd=src, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            rc = proc.wait(timeout=limit)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
        except BaseException:
            # Ctrl-C or SIGTERM (`timeout make check-frameworks`): pytest runs in a session of its own, which
            # would outlive this process; end it with us.
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    summary = summarize(results)
    summary.update(exit_code=rc, suite_timeout=timed_out, seconds=round(time.monotonic() - started, 1),
                   log=logfile, results=results, mode=mode, backend=backend)
    finished = summary.pop("finished")
    summary["complete"] = finished and not timed_out and rc in (0, 1)
    return summary


def summarize(path):
    """Fold the plugin's JSON lines into one status per test."""
    tests = {}
    finished = False
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a kill
                if record.get("event") == "sessionfinish":
                    finished = True
                    continue
                fold_record(tests, record)
    counts = {}
    loops = {}
    for test in tests.values():
        counts[test["status"]] = counts.get(test["status"], 0) + 1
        for kind in test["loops"]:
            loops[kind] = loops.get(kind, 0) + 1
    failures = {nodeid: {"status": t["status"], "message": t.get("message", "")}
                for nodeid, t in sorted(tests.items()) if t["status"] in BAD}
    # Tests that ran a stock asyncio loop and no zloop one: in a zloop run, those that build their own loop.
    stock_only = sorted(nodeid for nodeid, t in tests.items() if "asyncio" in t["loops"] and "zloop" not in t["loops"])
    return {"counts": counts, "tests_with_loop": loops, "failures": failures, "finished": finished,
            "stock_only_tests": stock_only, "statuses": {nodeid: t["status"] for nodeid, t in tests.items()}}


def zloop_share(summary):
    """Of the tests that ran an asyncio or a zloop loop, the share that ran a zloop one (None: no such test)."""
    zloop = summary["tests_with_loop"].get("zloop", 0)
    total = zloop + len(summary["stock_only_tests"])
    return zloop / total if total else None


RANK = {"passed": 0, "skipped": 0, "xfailed": 0, "xpassed": 0, "failed": 1, "error": 2, "timeout": 3,
        "crashed": 4}


def fold_record(tests, record):
    test = tests.setdefault(record["nodeid"], {"status": "passed", "loops": set(), "seen": False})
    test["loops"].update(record.get("loops", ()))
    when, outcome = record["when"], record["outcome"]
    status = None
    if outcome == "failed":
        message = record.get("message", "")
        if when not in ("setup", "call", "teardown", "collect"):
            status = "crashed"           # xdist: the worker died running it (timeout or crash)
        elif "Timeout" in message and "pytest-timeout" in message:
            status = "timeout"
        else:
            status = "failed" if when in ("call", "collect") else "error"
        if RANK[status] >= RANK.get(test["status"], 0):
            test["message"] = message
    elif when == "call" or (when == "setup" and outcome == "skipped"):
        status = outcome
        if record.get("xfail"):
            status = "xfailed" if outcome == "skipped" else "xpassed"
    if status is None:
        return
    if not test["seen"] or RANK[status] > RANK[test["status"]]:
        test["status"] = status
    test["seen"] = True


# ---------------------------------------------------------------- comparing and reporting

def compare(control, zloop):
    c, z = set(control["failures"]), set(zloop["failures"])
    return {"control_only": sorted(c - z), "zloop_only": sorted(z - c), "common": sorted(c & z)}


def recheck(name, pin, venv, src, args, backend, diff, rounds):
    """Rerun the differing tests in both modes; a difference that repeats is steady, else flaky."""
    differing = diff["control_only"] + diff["zloop_only"]
    if not differing or rounds <= 0:
        return {"steady": differing, "flaky": []}
    steady = set(differing)
    for attempt in range(rounds):
        tag = f"-recheck{attempt + 1}"
        rc = run_suite(name, pin, venv, src, args, "control", None, tag, sorted(steady))
        rz = run_suite(name, pin, venv, src, args, "zloop", backend, tag, sorted(steady))
        if not (rc["complete"] and rz["complete"]):
            log(f"  recheck run incomplete (see {rc['log']} and {rz['log']}): differences kept as steady")
            break
        for nodeid in list(steady):
            c_bad = rc["statuses"].get(nodeid) in BAD
            z_bad = rz["statuses"].get(nodeid) in BAD
            expected_z_bad = nodeid in diff["zloop_only"]
            if not (z_bad == expected_z_bad and c_bad != expected_z_bad):
                steady.discard(nodeid)
        if not steady:
            break
    return {"steady": sorted(steady), "flaky": sorted(set(differing) - steady)}


def describe(summary):
    counts = summary["counts"]
    parts = [f"{counts.get(k, 0)} {k}" for k in ("passed", "failed", "error", "timeout", "crashed",
                                                  "skipped", "xfailed") if counts.get(k) or k == "passed"]
    loops = ", ".join(f"{kind} in {n}" for kind, n in sorted(summary["tests_with_loop"].items())) or "none"
    if summary["mode"] == "zloop" and zloop_share(summary) is not None:
        loops += f" (zloop share {zloop_share(summary):.1%})"
    state = "" if summary["complete"] else " [INCOMPLETE: " + (
        "suite timeout" if summary["suite_timeout"] else f"pytest exit {summary['exit_code']}") + "]"
    return f"{', '.join(parts)} in {summary['seconds']:.0f} s; tests that ran a loop: {loops}{state}"


def print_side_by_side(name, version, control, zloop, backend, diff, rechecked):
    zlabel = f"zloop[{backend}]"
    log(f"\n=== {name} {version}: control (stock asyncio) vs {zlabel}")
    log(f"  control: {describe(control)}")
    log(f"  {zlabel}: {describe(zloop)}")
    rows = [("zloop-only", n) for n in diff["zloop_only"]] + \
           [("control-only", n) for n in diff["control_only"]] + [("common", n) for n in diff["common"]]
    if not rows:
        log("  no failures in either run")
        return
    width = max(len(zlabel), 12)
    log(f"  {'control':<12} {zlabel:<{width}} {'':<12} test")
    for category, nodeid in rows:
        cstat = control["failures"].get(nodeid, {}).get("status", "-")
        zstat = zloop["failures"].get(nodeid, {}).get("status", "-")
        note = ""
        if category != "common":
            note = " (flaky)" if nodeid in rechecked["flaky"] else ""
        log(f"  {cstat:<12} {zstat:<{width}} {category:<12} {nodeid}{note}")
        failing = zloop if category == "zloop-only" else control
        message = failing["failures"].get(nodeid, {}).get("message", "")
        if category != "common" and message:
            log(f"  {'':<12} {'':<{width}} {'':<12}   -> {message.splitlines()[0][:160]}")
    log(f"  control-only: {len(diff['control_only'])}, zloop-only: {len(diff['zloop_only'])}, "
        f"common: {len(diff['common'])}"
        + (f"; flaky on recheck: {len(rechecked['flaky'])}" if rechecked["flaky"] else ""))


def markdown_table(report):
    """The results as Markdown: a table with one row per framework and run, then each one-sided failure once, with
    the backends it was seen on and whether the recheck found it flaky."""
    rows = ["| framework | run | tests | passed | failed | skipped, xfail | wall time | zloop-only | control-only |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    notes = []
    for name, entry in report["frameworks"].items():
        sides = {}  # (side, nodeid) -> {"backends": [...], "flaky": bool}
        for label, run in entry["runs"].items():
            counts = run["counts"]
            backend = label.partition("-")[2]
            diff = entry["compare"].get(backend, {})
            cells = []
            for key in ("zloop_only", "control_only"):
                listed = diff.get(key, ()) if label != "control" else ()
                flaky = [n for n in listed if n in diff.get("flaky", ())]
                for nodeid in listed:
                    seen = sides.setdefault((key, nodeid), {"backends": [], "flaky": True})
                    seen["backends"].append(backend)
                    seen["flaky"] = seen["flaky"] and nodeid in flaky
                cells.append("" if label == "control" else
                             f"{len(listed)}" + (f" ({len(flaky)} flaky)" if flaky else ""))
            mode = "stock asyncio" if label == "control" else f"zloop {backend}"
            status = "" if run["complete"] else " (incomplete)"
            rows.append(f"| {name} {entry['version']} | {mode}{status} | {sum(counts.values())} | "
                        f"{counts.get('passed', 0) + counts.get('xpassed', 0)} | "
                        f"{sum(counts.get(k, 0) for k in BAD)} | "
                        f"{counts.get('skipped', 0) + counts.get('xfailed', 0)} | {run['seconds']:.0f} s | "
                        f"{cells[0]} | {cells[1]} |")
        for (key, nodeid), seen in sorted(sides.items()):
            side = "zloop-only" if key == "zloop_only" else "control-only"
            notes.append(f"- {name}, {side}{' (flaky)' if seen['flaky'] else ''}, on {', '.join(seen['backends'])}: "
                         f"`{nodeid}`")
    total = report.get("seconds")
    footer = [f"\nTotal wall time: {total / 60:.0f} min." if total else ""]
    return "\n".join(rows + ([""] + notes if notes else []) + footer) + "\n"


def zloop_backends(spec, pythonpath, python):
    if spec != "all":
        return [b.strip() for b in spec.split(",") if b.strip()]
    out = subprocess.check_output([python, "-c", "import zloop; print(','.join(zloop.backends()))"],
                                  env=dict(os.environ, PYTHONPATH=os.path.abspath(pythonpath)), text=True)
    return out.strip().split(",")


def verdict(control, zloop, rechecked, strict, min_share):
    """Why this zloop run does not match its control, or None."""
    if not zloop["complete"]:
        return "zloop run incomplete"
    if control is not None and not control["complete"]:
        return "control run incomplete"
    if not zloop["tests_with_loop"].get("zloop"):
        return "no test ran a zloop loop"
    if control is not None and control["tests_with_loop"].get("zloop"):
        return "the control run ran a zloop loop"
    share = zloop_share(zloop)
    if share is not None and share < min_share:
        return f"only {share:.1%} of the tests that ran a loop ran zloop (--min-zloop-share {min_share})"
    if rechecked is None:
        return None
    if rechecked["steady"] or (strict and rechecked["flaky"]):
        return "failure sets differ"
    return None


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    started = time.monotonic()
    # Started in the background without job control (`run.py &`), this process and so every pytest it starts
    # would ignore SIGINT, and suite tests that raise SIGINT (AnyIO's test_keyboard_interrupt_does_not_resume_test)
    # would fail in both runs. A Python handler here leaves the children the default disposition.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    pins = read_pins()
    names = list(pins) if args.frameworks == "all" else [n.strip().lower() for n in args.frameworks.split(",")]
    for name in names:
        if name not in pins or name not in FRAMEWORKS:
            raise SystemExit(f"unknown framework {name!r} (known: {', '.join(pins)})")
    args.cache = os.path.abspath(args.cache)
    logdir = os.path.join(args.cache, "logs")
    os.makedirs(logdir, exist_ok=True)
    backends = zloop_backends(args.backend, args.pythonpath, args.python)
    report = {"python": args.python, "backends": backends, "frameworks": {}}
    problems = []
    for name in names:
        pin = pins[name]
        src = fetch_source(pin, args.cache, args.python, logdir)
        venv = ensure_venv(name, pin, src, args, logdir)
        entry = report["frameworks"][name] = {
            "version": pin["version"], "venv": venv, "runs": {}, "compare": {},
            "deselected": [{"nodeid": n, "reason": r} for n, r in pin["deselect"]]}
        if args.setup_only:
            continue
        control = None
        if not args.no_control:
            log(f"[{name}] control run (stock asyncio)")
            control = entry["runs"]["control"] = run_suite(name, pin, venv, src, args, "control", None, "")
        for backend in backends:
            log(f"[{name}] zloop run, backend {backend}")
            zloop = entry["runs"][f"zloop-{backend}"] = run_suite(name, pin, venv, src, args, "zloop",
                                                                  backend, "")
            rechecked = None
            if control is not None:
                diff = compare(control, zloop)
                rechecked = recheck(name, pin, venv, src, args, backend, diff, args.recheck)
                entry["compare"][backend] = dict(diff, **rechecked)
                print_side_by_side(name, pin["version"], control, zloop, backend, diff, rechecked)
            else:
                log(f"  {name} zloop[{backend}]: {describe(zloop)}")
            why = verdict(control, zloop, rechecked, args.strict, args.min_zloop_share)
            entry["compare"].setdefault(backend, {})["verdict"] = why or "match"
            if why:
                problems.append(f"{name} zloop[{backend}]: {why}")
    for entry in report["frameworks"].values():
        for run in entry["runs"].values():
            run.pop("statuses", None)
    report["seconds"] = round(time.monotonic() - started, 1)
    report["problems"] = problems
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1, sort_keys=True)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(markdown_table(report))
    log(f"\nframework suites: {len(problems)} problem(s) in {report['seconds']:.0f} s")
    for problem in problems:
        log(f"  {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
