"""User-facing errors: one line that names the problem and the fix, no traceback."""

import functools
import sys


class BenchError(Exception):
    """A problem the user can fix (bad params, missing input, corrupt file).

    Stage scripts and the CLI print its message as one line on stderr and
    exit non-zero; anything else is a bug and keeps its traceback.
    """


def exit_on_bench_error(main):
    """Wrap a script's main(): BenchError becomes `error: <message>` and exit 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except BenchError as exc:
            from cifarbench import distributed  # late: keeps this module free of torch

            if not distributed.report_worker_error(str(exc)):  # a torchrun worker tells its launcher
                print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
