"""User-facing errors: the CLI prints their message (no traceback) and exits non-zero."""


class UserError(Exception):
    """Bad input or configuration that the user can fix; the message says how."""


class ConfigError(UserError):
    pass


class ManifestMismatch(UserError):
    """A stage was given inputs made from other data or another model than it was asked to use."""


class UnsafeCheckpointError(UserError):
    """A checkpoint that would execute pickled code when loaded."""


class DataError(UserError):
    pass


class Interrupted(Exception):
    """A stop signal (SIGTERM, SIGINT, SIGUSR1) ended the run at a point it resumes from; the CLI prints the
    message and how to continue, and exits with the conventional 128 + signal number."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum
