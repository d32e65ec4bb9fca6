"""The page's like / dislike route: POST /drum/ratings stores a rating, GET /drum/ratings gives them back.

    ratings_file()          where the ratings are: <ComfyUI user folder>/__drum/ratings.json (a System User folder,
                            which ComfyUI's /userdata routes never serve; one file per ComfyUI, as output/ is one)
    register_routes()       adds the routes to the running server once (nothing without a PromptServer)

POST /drum/ratings  {"image": {"filename": "ComfyUI_00001_.png", "subfolder": "", "type": "output"},
                     "rating": "like" | "dislike" | "clear"}
    -> 200 {"image": {...}, "key": "<subfolder>/<filename>", "rating": "like" | "dislike" | null, "prompts": [...]}
GET  /drum/ratings  -> 200 {"ratings": [{"type", "subfolder", "filename", "rating": "like" | "dislike" | <number>}, ...]}
GET  /drum/ratings?filename=...&subfolder=...&type=...  -> 200 that one image's {"image", "key", "rating", "prompts"}

Only an image in ComfyUI's output or temp folder is accepted: the filename is one name (no separators), the
subfolder has no "." / ".." parts, and the file, links resolved, must lie inside that folder and exist. The prompts
stored are the image's positive prompts read from its metadata (drum_core.image_history; pixels are never decoded).
A bad request answers 400 (413 for a body over MAX_BODY_BYTES, 404 for an image that is not there) with
{"error": "<plain message>"}.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import folder_paths

from drum_core.image_history import read_image_prompts
from drum_core.ratings import DISLIKE_RATING, LIKE_RATING, RatedImage, Ratings, RatingsError, check_key, rating_value

from .server_routes import route_table

ROUTE = "/drum/ratings"
FILE_NAME = "ratings.json"
SYSTEM_USER = "drum"
MAX_BODY_BYTES = 16 * 1024
LOG = logging.getLogger(__name__)


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def pack_user_folder() -> str:
    """<user folder>/__drum: ComfyUI's System User folder for the pack (not served over HTTP); the pack's files that
    belong to the ComfyUI install, not to a page user (ratings, the outputs scan cache)."""
    system_folder = getattr(folder_paths, "get_system_user_directory", None)
    return system_folder(SYSTEM_USER) if system_folder else os.path.join(folder_paths.get_user_directory(), f"__{SYSTEM_USER}")


def ratings_file() -> str:
    """<user folder>/__drum/ratings.json (pack_user_folder)."""
    return os.path.join(pack_user_folder(), FILE_NAME)


def rating_word(rating: float | None) -> str | float | None:
    """ "like" / "dislike" for the page's two ratings, the number for any other (a hand-edited file), None = unrated."""
    if rating is None:
        return None
    return {LIKE_RATING: "like", DISLIKE_RATING: "dislike"}.get(rating, rating)


def _text(value: Any, field: str, limit: int = 1024) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"image {field} must be a string")
    if len(value) > limit or "\x00" in value:
        raise BadRequest(f"image {field} is not a file name")
    return value


def resolve_image(image: Any) -> tuple[str, str, str]:
    """(type, key, real path) of an image reference {"filename", "subfolder", "type"} that names a file inside
    ComfyUI's output or temp folder; BadRequest otherwise (404 when it is not there)."""
    if not isinstance(image, Mapping):
        raise BadRequest('"image" must be an object with filename, subfolder and type')
    kind = image.get("type", "output")
    if kind not in ("output", "temp"):
        raise BadRequest(f"only output and temp images can be rated, not type {str(kind)[:40]!r}")
    filename = _text(image.get("filename"), "filename")
    subfolder = _text(image.get("subfolder", ""), "subfolder")
    if not filename or "/" in filename or "\\" in filename or filename in (".", ".."):
        raise BadRequest("image filename must be a file name without folders")
    parts = [part for part in subfolder.replace("\\", "/").split("/") if part]
    if subfolder.startswith(("/", "\\")) or os.path.isabs(subfolder) or any(part in (".", "..") for part in parts):
        raise BadRequest("image subfolder must be a folder inside the output or temp folder")
    base = folder_paths.get_directory_by_type(kind)
    if base is None:  # pragma: no cover - both kinds always have a folder
        raise BadRequest(f"ComfyUI has no {kind} folder")
    root = os.path.realpath(base)
    real = os.path.realpath(os.path.join(root, *parts, filename))
    if os.path.commonpath([root, real]) != root:
        raise BadRequest(f"the image is not inside ComfyUI's {kind} folder")
    if not os.path.isfile(real):
        raise BadRequest(f"no image {'/'.join([*parts, filename])} in ComfyUI's {kind} folder", status=404)
    try:
        key = check_key(os.path.relpath(real, root).replace(os.sep, "/"))
    except RatingsError as error:
        raise BadRequest(str(error)) from None
    return kind, key, real


def image_prompts(path: str) -> list[str]:
    """The image's positive prompts from its metadata ([] when it gives none: the rating is kept all the same)."""
    return list(read_image_prompts(path).prompts)


class RatingsRoutes:
    """The two routes' handlers around one ratings store (created on first use: the user folder is set by then)."""

    def __init__(self, path: Callable[[], str] = ratings_file, read_prompts: Callable[[str], Sequence[str]] = image_prompts):
        self._path = path
        self._read_prompts = read_prompts
        self._store: Ratings | None = None

    @property
    def store(self) -> Ratings:
        if self._store is None:
            self._store = Ratings(self._path())
        return self._store

    @staticmethod
    def _answer(kind: str, key: str, record: RatedImage | None) -> dict:
        subfolder, _, filename = key.rpartition("/")
        return {
            "image": {"filename": filename, "subfolder": subfolder, "type": kind},
            "key": key,
            "rating": rating_word(record.rating if record else None),
            "prompts": list(record.prompts) if record else [],
        }

    def _rate(self, image: Any, word: Any) -> dict:
        rating = rating_value(word)
        kind, key, path = resolve_image(image)
        prompts = self._read_prompts(path) if rating is not None else []
        return self._answer(kind, key, self.store.rate(kind, key, rating, prompts))

    def _lookup(self, query: Mapping[str, str]) -> dict:
        if "filename" in query:
            kind, key, _ = resolve_image(
                {name: query.get(name, "") for name in ("filename", "subfolder")} | {"type": query.get("type", "output")}
            )
            return self._answer(kind, key, self.store.get(kind, key))
        return {"ratings": [{**self._answer(r.kind, r.key, r)["image"], "rating": rating_word(r.rating)} for r in self.store.records()]}

    async def post(self, request):
        from aiohttp import web

        try:
            if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
                raise BadRequest(f"request body larger than {MAX_BODY_BYTES} bytes", status=413)
            body = bytearray()
            while len(body) <= MAX_BODY_BYTES:  # a chunked body has no length: read at most one byte past the bound
                chunk = await request.content.read(MAX_BODY_BYTES + 1 - len(body))
                if not chunk:
                    break
                body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise BadRequest(f"request body larger than {MAX_BODY_BYTES} bytes", status=413)
            try:
                data = json.loads(bytes(body).decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                raise BadRequest("request body is not JSON") from None
            if not isinstance(data, dict) or set(data) - {"image", "rating"}:
                raise BadRequest('request body must be {"image": {...}, "rating": "like" | "dislike" | "clear"}')
            answer = await asyncio.to_thread(self._rate, data.get("image"), data.get("rating"))
        except (BadRequest, RatingsError) as error:
            return _error(web, error)
        return web.json_response(answer)

    async def get(self, request):
        from aiohttp import web

        try:
            answer = await asyncio.to_thread(self._lookup, request.rel_url.query)
        except (BadRequest, RatingsError) as error:
            return _error(web, error)
        return web.json_response(answer)


def _error(web, error: Exception):
    status = getattr(error, "status", 400)
    if not isinstance(error, BadRequest):
        LOG.warning("DrUM ratings: %s", error)
    return web.json_response({"error": str(error)}, status=status)


def register_routes(routes_owner: Any = None) -> RatingsRoutes | None:
    """Adds GET and POST /drum/ratings to the running server's route table, once; None without a server."""
    routes = route_table(ROUTE, routes_owner)
    if routes is None:
        return None
    handlers = RatingsRoutes()
    routes.get(ROUTE)(handlers.get)
    routes.post(ROUTE)(handlers.post)
    return handlers
