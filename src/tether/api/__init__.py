"""The HTTP API. Thin: it authenticates, translates, and calls the services."""

from tether.api._app import create_app

__all__ = ["create_app"]
