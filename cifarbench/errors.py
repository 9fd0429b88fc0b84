"""User-facing errors: one line that names the problem and the fix, no traceback.

A leaf: imports nothing from cifarbench. Stage scripts go through
cifarbench.pipeline.entry, which prints these (and params.ParamsError) as one line.
"""

import functools
import sys


class BenchError(Exception):
    """A problem the user can fix (bad params, missing input, corrupt file).

    Stage scripts and the CLI print its message as one line on stderr and
    exit non-zero; anything else is a bug and keeps its traceback.
    """


def exit_on_bench_error(main, also=()):
    """Wrap a command's main(): BenchError (and the `also` types) becomes `error: <message>` and exit 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except (BenchError, *also) as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
