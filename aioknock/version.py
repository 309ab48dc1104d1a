"""The version, written once: pyproject.toml, ``aioknock.__version__`` and ``--version``
read it here."""

__version__ = "0.2.0"
