"""The package version, apart from ``videokit/__init__.py`` so that modules can read it without
importing the whole public surface (which imports them)."""

__all__ = ["__version__"]

__version__ = "0.1.0"
