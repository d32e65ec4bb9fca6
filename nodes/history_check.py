"""The page's check of an uploaded history: POST /drum/history/check right after an upload, so that a file the
History Loader cannot read is refused then, in words that fit the file, and not at run time.

    check_history_file(name)  -> (count, None) for a readable history, (None, problem) otherwise
    register_routes()         adds the route to the running server once (nothing without a PromptServer)

POST /drum/history/check  {"name": "<a file name in ComfyUI's input folder, as the upload answered it>"}
    -> 200 {"ok": true, "count": <prompts>} | 200 {"ok": false, "problem": "<plain words>"}
    -> 400 {"error": "<plain words>"} for a body that names no input-folder history file

The name goes through nodes.history.resolve_history_file (inside the input folder, links resolved, a history
extension): nothing from the client becomes a path outside it. The words name the file as the page named it, never
a server path or a class name: an image, a binary file, an empty file, text that is not UTF-8, or the line that
breaks the format (drum_core.history's own messages, with the file's name for its path).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from drum_core.history import HistoryError

from .history import load_input_history, resolve_history_file
from .server_routes import route_table

ROUTE = "/drum/history/check"
MAX_BODY_BYTES = 4096
SNIFF_BYTES = 8192
IMAGE_SIGNATURES = {  # leading bytes -> the format's name
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"BM": "BMP",
}
HISTORY_FORMS = "a history is text: one prompt a line (.txt), a table (.csv, .tsv) or a list (.json, .jsonl)"
LOG = logging.getLogger(__name__)


def image_format(head: bytes) -> str | None:
    """The image format `head` (a file's first bytes) starts with, if any."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return next((kind for signature, kind in IMAGE_SIGNATURES.items() if head.startswith(signature)), None)


def check_history_file(name: str) -> tuple[int | None, str | None]:
    """(number of prompts, None) when the History Loader reads input-folder file `name`; (None, what is wrong) when not.
    Raises HistoryError when `name` is no history file inside the input folder."""
    path = resolve_history_file(name)
    with open(path, "rb") as file:
        head = file.read(SNIFF_BYTES)
    kind = image_format(head)
    if kind:
        return None, f"{name} is an image ({kind}), not a prompt history: {HISTORY_FORMS}."
    if not head.strip():
        return None, f"{name} is empty: {HISTORY_FORMS}."
    if b"\x00" in head:
        return None, f"{name} is a binary file, not text: {HISTORY_FORMS}."
    try:
        return len(load_input_history(name)), None
    except HistoryError as error:
        return None, str(error)


class HistoryCheckRoute:
    async def post(self, request):
        from aiohttp import web

        try:
            if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
                raise HistoryError("the request is too long")
            body = json.loads(await request.content.read(MAX_BODY_BYTES + 1) or b"null")
            name = body.get("name") if isinstance(body, dict) else None
            if not isinstance(name, str) or not name or len(name) > 1024 or "\x00" in name:
                raise HistoryError('the request names no file: send {"name": "<file in the input folder>"}')
            count, problem = check_history_file(name)
        except (HistoryError, ValueError) as error:
            return web.json_response({"error": str(error)}, status=400)
        except OSError as error:
            LOG.warning("DrUM: could not read an uploaded history: %s", error)
            return web.json_response({"ok": False, "problem": "The file could not be read."})
        if problem:
            return web.json_response({"ok": False, "problem": problem})
        return web.json_response({"ok": True, "count": count})


def register_routes(routes_owner: Any = None) -> HistoryCheckRoute | None:
    """Adds POST /drum/history/check to the running server's route table, once; None without a server."""
    routes = route_table(ROUTE, routes_owner)
    if routes is None:
        return None
    handler = HistoryCheckRoute()
    routes.post(ROUTE)(handler.post)
    return handler
