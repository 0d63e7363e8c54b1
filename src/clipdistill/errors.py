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
