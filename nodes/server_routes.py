"""The running ComfyUI server's route table, for the pack's HTTP routes (ratings, the upload check)."""

from __future__ import annotations

from typing import Any


def route_table(route: str, routes_owner: Any = None) -> Any:
    """The route table of `routes_owner` (default: the running PromptServer) to add `route` to, or None where there is
    no server or `route` is already registered (a pack loaded twice adds its routes once)."""
    if routes_owner is None:
        try:
            from server import PromptServer
        except ImportError:
            return None
        routes_owner = getattr(PromptServer, "instance", None)
    routes = getattr(routes_owner, "routes", None)
    if routes is None or any(getattr(entry, "path", None) == route for entry in routes):
        return None
    return routes
