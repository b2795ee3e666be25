"""The package version (pyproject.toml says the same): a module of its own, so that any module can import it."""

__version__ = "0.6.0"
