"""The server's routes, one router per job; each reads the app's state through
:mod:`..deps` and holds none of its own."""

from . import admin, completions, ops, users

__all__ = ["ROUTERS"]

#: In the order the OpenAPI document lists them.
ROUTERS = (completions.router, users.router, ops.router, admin.router)
