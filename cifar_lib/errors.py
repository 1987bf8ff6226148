"""The one error a user fixes by changing a setting, a file or an argument. It lives apart
so that torch-free modules (sweeps.py) raise it too; the command line prints it as one
sentence and exits 2."""


class ConfigError(ValueError):
    """A config or command-line setting is invalid; the message says what and how to fix it."""
