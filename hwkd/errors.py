"""Errors a user can cause. The CLI prints them as one line and exits non-zero, without a traceback."""


class HwkdError(Exception):
    """A problem with the user's input: the message names the thing and the fix."""

    exit_code = 2

    def __init__(self, what: str, fix: str | None = None):
        self.what = what
        self.fix = fix
        super().__init__(f"{what}" + (f" — {fix}" if fix else ""))
