"""`python -m tests.harness up|down|status|demo`: the shared stack in .stack/ (git-ignored)."""

from __future__ import annotations

import argparse
import sys

from .locks import file_lock
from .process import ServiceStartError
from .stack import SERVICE_NAMES, SHARED_DIR, Stack, shared_stack_lock


def _timings_line(timings: dict[str, float]) -> str:
    started = [k for k in SERVICE_NAMES if k in timings]
    if not started:
        return "bring-up: everything was already running"
    parts = [f"{k} {timings[k]:.2f}s" for k in [*started, "promtool"]]
    return f"bring-up (in parallel): {', '.join(parts)}; total {timings['total']:.2f}s"


def cmd_up(only: list[str]) -> int:
    """Start whatever is not already running; services stay up after this process exits."""
    with file_lock(shared_stack_lock()):
        stack = Stack.load(SHARED_DIR) or Stack(SHARED_DIR, persistent=True)
        # Forget services that died (their dirs are reused by the fresh start).
        for name, live in stack.live_services().items():
            if not live:
                print(f"{name}: recorded in stack.json but not answering; starting it again")
                svc = stack.services.pop(name)
                svc.destroy()
        try:
            timings = stack.up(only or SERVICE_NAMES)
        except ServiceStartError as e:
            stack.save()
            print(f"harness up failed: {e}", file=sys.stderr)
            return 1
    print(stack.table())
    print(_timings_line(timings))
    print(f"state: {stack.state_file}  (stop with `python -m tests.harness down`)")
    return 0


def cmd_down() -> int:
    """Stop every service of the shared stack and delete .stack/."""
    with file_lock(shared_stack_lock()):
        stack = Stack.load(SHARED_DIR)
        if stack is None:
            print(f"no stack in {SHARED_DIR}")
            return 0
        stopped = stack.down()
        stack.remove()
    print(f"stopped: {', '.join(stopped) or 'nothing'}; removed {SHARED_DIR}")
    return 0


def cmd_status() -> int:
    """Print the shared stack's table; exit 1 if any recorded service is down."""
    stack = Stack.load(SHARED_DIR)
    if stack is None:
        print(f"no stack in {SHARED_DIR} (start one with `python -m tests.harness up`)")
        return 1
    print(stack.table())
    return 0 if all(stack.live_services().values()) else 1


def cmd_demo() -> int:
    """For now: bring the stack up and say what runs where."""
    rc = cmd_up([])
    if rc == 0:
        print(
            "\nidsync demo: the local stack is up (above). The daemons and the Graph emulator join it "
            "in a later release; stop the stack with `make stack-down`."
        )
    return rc


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m tests.harness`."""
    p = argparse.ArgumentParser(prog="python -m tests.harness", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start the shared stack in .stack/ (detached)")
    up.add_argument(
        "services", nargs="*", metavar="SERVICE", help=f"only these of {', '.join(SERVICE_NAMES)}"
    )
    sub.add_parser("down", help="stop the shared stack and delete .stack/")
    sub.add_parser("status", help="show what runs where")
    sub.add_parser("demo", help="bring the stack up and show it (what `make demo` runs for now)")
    args = p.parse_args(argv)
    if args.cmd == "up":
        unknown = set(args.services) - set(SERVICE_NAMES)
        if unknown:
            p.error(
                f"unknown service(s): {', '.join(sorted(unknown))}; choose from {', '.join(SERVICE_NAMES)}"
            )
        return cmd_up(args.services)
    if args.cmd == "down":
        return cmd_down()
    if args.cmd == "status":
        return cmd_status()
    return cmd_demo()


if __name__ == "__main__":
    sys.exit(main())
