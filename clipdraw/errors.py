"""The one exception type users see as a one-line message (exit code 2 in the CLI)."""


class ClipdrawError(Exception):
    """A problem with the user's input or environment, explained in one line."""
