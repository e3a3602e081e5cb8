"""The package's error: a module of its own, so that modules the package's own `__init__`
reaches (token files, through `load_tokens`) can raise it without an import cycle."""


class AvTokensError(Exception):
    """An error the user can act on; its message is shown as one line, without traceback."""
