# tests/difffuzz/__main__.py — the long differential fuzz run (`make fuzz`): batches of Hypothesis examples with
# fresh seeds until the budget is spent; each new difference is shrunk, printed, then tolerated so the run goes on.
#
#   python tests/difffuzz [--time S] [--examples N] [--steps N] [--seed N] [--mix ci|all] [--backends a,b]

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hypothesis import Phase, seed  # noqa: E402
from hypothesis.stateful import run_state_machine_as_test  # noqa: E402

from difffuzz.machine import (COUNTERS, LAST_FOUND, CI_FEATURES, FEATURES, PENDING_OPEN,  # noqa: E402
                              make_machine, machine_settings)
from difffuzz.runner import Fleet  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--time", type=float, default=600.0, help="budget in seconds (default 600)")
    parser.add_argument("--examples", type=int, default=0, help="stop after this many sequences (0: time only)")
    parser.add_argument("--steps", type=int, default=40, help="most operations in one sequence (default 40)")
    parser.add_argument("--batch", type=int, default=100, help="sequences per Hypothesis run (one seed each)")
    parser.add_argument("--seed", type=int, default=int(time.time()), help="first seed (default: the time)")
    parser.add_argument("--mix", default="all", help="ci (the CI run's mix), all, or a comma list of FEATURES")
    parser.add_argument("--backends", default="", help="zloop backends (default: every compiled one)")
    parser.add_argument("--no-shrink", action="store_true", help="report differences unshrunk (faster)")
    parser.add_argument("--json", help="also write the summary to this file")
    return parser.parse_args()


def features_of(mix):
    if mix == "ci":
        return CI_FEATURES
    if mix == "all":
        return FEATURES
    chosen = frozenset(filter(None, mix.split(",")))
    unknown = chosen - FEATURES
    if unknown:
        sys.exit(f"unknown features: {sorted(unknown)}; known: {sorted(FEATURES)}")
    return chosen


def main():
    args = parse_args()
    import zloop
    backends = args.backends.split(",") if args.backends else list(zloop.backends())
    features = features_of(args.mix)
    phases = [Phase.generate] if args.no_shrink else [Phase.generate, Phase.shrink]
    print(f"difffuzz: asyncio vs {', '.join(backends)}; mix {sorted(features)}; seed {args.seed}; "
          f"budget {args.time:.0f} s, {args.steps} steps a sequence", flush=True)
    fleet = Fleet(backends)
    known, findings = set(), []
    started = time.monotonic()
    batch_seed = args.seed
    try:
        while time.monotonic() - started < args.time:
            if args.examples and COUNTERS["sequences"] >= args.examples:
                break
            machine = make_machine(fleet, features, known=frozenset(known))
            settings = machine_settings(args.batch, args.steps, phases=phases)
            try:
                run_state_machine_as_test(seed(batch_seed)(machine), settings=settings)
            except KeyboardInterrupt:
                print("interrupted: the summary covers what ran", flush=True)
                break
            except AssertionError:
                for kind, sig, detail, ops in LAST_FOUND:
                    known.add((kind, sig))
                    findings.append({"backend": kind, "signature": repr(sig), "detail": detail, "program": ops})
                    print(f"\n=== difference #{len(findings)} [{kind}] {sig}\n{detail}\nprogram:\n{ops}", flush=True)
            batch_seed += 1
            print(f"  {time.monotonic() - started:6.0f} s: {COUNTERS['sequences']} sequences, "
                  f"{COUNTERS['steps']} steps, {len(findings)} differences", flush=True)
    finally:
        fleet.close()
    elapsed = time.monotonic() - started
    summary = {"sequences": COUNTERS["sequences"], "steps": COUNTERS["steps"], "seconds": round(elapsed),
               "first_seed": args.seed, "last_seed": batch_seed, "backends": backends, "mix": sorted(features),
               "differences": len(findings), "findings": findings}
    print(f"\ndifffuzz: {summary['sequences']} sequences, {summary['steps']} steps, each replayed on asyncio and "
          f"{len(backends)} backends, in {elapsed:.0f} s (seeds {args.seed}..{batch_seed}); "
          f"{len(findings)} differences")
    by_kind = {}
    for finding in findings:
        by_kind.setdefault(finding["signature"], []).append(finding["backend"])
    for signature, kinds in by_kind.items():
        print(f"  {signature}  on {', '.join(kinds)}")
    pending = sorted(PENDING_OPEN & features)
    if pending:
        print(f"mix included known-open findings: {pending}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(summary, out, indent=1)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
