"""User-facing errors: the CLI prints these as one line (``--debug`` shows the traceback)."""


class Vibe3rError(Exception):
    """Base class of errors whose message is meant for the user as-is."""


class InputError(Vibe3rError, ValueError):
    """Bad user input: a prompt, a capture, a file, a checkpoint."""
