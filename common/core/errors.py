"""User-facing errors: one line on stderr and a non-zero exit, never a traceback."""
import difflib
import functools
import sys


class UserError(Exception):
    """A mistake in the user's input (path, class name, data, option) that the user can fix."""


EXIT_USER_ERROR = 2


def main_guard(func):
    """Decorate a command-line ``main`` so that a ``UserError`` prints ``error: ...`` and exits with code 2.

    Keyboard interrupts exit with 130 and a short message; operating-system errors (a folder that cannot be
    written, a full disk) print one ``error:`` line too. Other exceptions are bugs and keep their traceback.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
        except OSError as exc:  # a folder that cannot be written, a full disk: the user's to fix, in one line
            where = f": {exc.filename}" if exc.filename else ""
            print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)

    return wrapper


def suggest(name, choices):
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""
