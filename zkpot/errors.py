"""Errors that stop a command at start-up with one clear line instead of a traceback."""


class StartupError(Exception):
    """A service or command cannot start; the message says why and what to check (zkpot.cli prints it)."""
