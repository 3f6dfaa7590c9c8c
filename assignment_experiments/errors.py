"""The error a user can fix by editing a config or a command line; its own module so that every part of the runner
(config parsing, validation, data preparation) can raise it without importing the others."""


class ConfigError(ValueError):
    """A config problem the user can fix; the message is one line naming the key and the fix."""
