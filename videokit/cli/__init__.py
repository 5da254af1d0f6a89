"""The ``videokit`` command."""
