"""One cache-key rule for the weights of every text-encoder backend (transformers, open_clip, ComfyUI).

A key must change whenever an output can: EVERY tensor contributes its name, shape, dtype, an evenly
strided sample of its values and the float64 sum and L2 norm of ALL its values, so a fine-tune of a
single block (or one weight) gives a new key while reading the weights stays one pass, done once per
backend object (ComfyUI: once per weight version, `WeightsFingerprint`). A tensor whose values cannot
be read (meta device, an unreadable quantized subclass) feeds a key that is never reused: a fresh
computation, never a stale cache entry.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable

import torch

SAMPLES = 256  # strided values per tensor, on top of its sum and norm
Unreadable = Callable[[torch.Tensor], str]


class Identities:
    """A token per live object: unique for the object's lifetime and never reused (an id() can be, once it dies).

    Bounds and lifetime: an entry for an object that can be weakly referenced leaves with its object, so those
    entries are bounded by the live objects. An object that cannot be (a slotted hook, some C types) is kept
    alive instead, at most `limit` of them, least recently tokenized first out: an object let go that way loses its
    token with it, so if it comes back it gets a new one (a fresh computation, never a stale cache entry) and no later
    object can inherit its token."""

    def __init__(self, limit: int = 1024) -> None:
        self.limit = limit  # objects kept alive at most (those that cannot be weakly referenced)
        self._lock = threading.Lock()
        self._tokens: dict[int, str] = {}
        self._kept_alive: OrderedDict[int, object] = OrderedDict()  # id -> object, least recently tokenized first

    def __len__(self) -> int:
        """Objects that hold a token now."""
        return len(self._tokens)

    @property
    def kept_alive(self) -> int:
        """Objects this registry keeps alive now (at most `limit`)."""
        return len(self._kept_alive)

    def token(self, obj: object) -> str:
        key = id(obj)
        with self._lock:
            if key in self._kept_alive:
                self._kept_alive.move_to_end(key)
            elif key not in self._tokens:
                self._tokens[key] = uuid.uuid4().hex
                try:
                    weakref.finalize(obj, self._tokens.pop, key, None)
                except TypeError:
                    self._kept_alive[key] = obj
                    while len(self._kept_alive) > self.limit:
                        dropped, _ = self._kept_alive.popitem(last=False)
                        del self._tokens[dropped]
            return self._tokens[key]


def fresh_token(_tensor: torch.Tensor) -> str:
    """The default key part of an unreadable tensor: new every time (no cache entry can match it)."""
    return uuid.uuid4().hex


def update_tensor(digest, tensor: torch.Tensor, unreadable: Unreadable = fresh_token) -> None:
    """Feed shape, dtype, a strided sample and the float64 sum and norm of every value of `tensor` into `digest`."""
    digest.update(f"{tuple(tensor.shape)}{tensor.dtype}".encode())
    if tensor.numel() == 0:
        return
    if tensor.is_meta:
        digest.update(f"meta#{unreadable(tensor)}".encode())
        return
    try:
        with torch.no_grad():
            values = tensor.detach()
            flat = values.reshape(-1)
            sample = flat[:: max(1, flat.numel() // SAMPLES)][:SAMPLES].float().cpu()
            total = float(values.sum(dtype=torch.float64))
            norm = float(torch.linalg.vector_norm(values, dtype=torch.float64)) if values.is_floating_point() else 0.0
        digest.update(sample.numpy().tobytes())
        digest.update(f"{total:.12e}|{norm:.12e}".encode())
    except (RuntimeError, TypeError, NotImplementedError):
        digest.update(f"{type(tensor).__qualname__}#{unreadable(tensor)}".encode())


def weights_fingerprint(named: Iterable[tuple[str, torch.Tensor]], unreadable: Unreadable = fresh_token) -> str:
    """The key of a set of named tensors (a module's `state_dict(keep_vars=True).items()`), in name order."""
    digest = hashlib.sha256(b"drum-weights-v2")
    for name, tensor in sorted(named, key=lambda item: item[0]):
        digest.update(name.encode())
        update_tensor(digest, tensor, unreadable)
    return digest.hexdigest()[:32]


def module_fingerprint(module: torch.nn.Module, unreadable: Unreadable = fresh_token) -> str:
    """weights_fingerprint of every parameter and buffer of `module`."""
    return weights_fingerprint(module.state_dict(keep_vars=True).items(), unreadable)


def _versions(named: list[tuple[str, torch.Tensor]], identities: Identities) -> tuple | None:
    """(name, identity token, version counter) of each tensor, or None when a counter cannot be read (inference tensors)."""
    try:
        return tuple((name, identities.token(tensor), tensor._version) for name, tensor in named)
    except RuntimeError:
        return None


class WeightsFingerprint:
    """A module's fingerprint, computed again only when a tensor was replaced or changed in place (its version
    counter moved): one pass over the weights per weight version, however often a run asks. Kept on the module it
    describes (one entry), so it lives and dies with it, and so do the identity tokens of its tensors (its own
    `Identities`: entries leave with their tensors)."""

    ATTRIBUTE = "_drum_weights_fingerprint"

    def __init__(self) -> None:
        self.versions: tuple | None = None
        self.value = ""
        self.computed = 0  # passes over the weights (for tests)
        self.identities = Identities()  # tokens of the module's tensors (a replaced tensor gets a new one)

    @classmethod
    def of(cls, module: torch.nn.Module, unreadable: Unreadable = fresh_token) -> str:
        memo = module.__dict__.get(cls.ATTRIBUTE)
        if memo is None:
            memo = cls()
            module.__dict__[cls.ATTRIBUTE] = memo
        named = list(module.state_dict(keep_vars=True).items())
        versions = _versions(named, memo.identities)
        if versions is None or versions != memo.versions:
            memo.value = weights_fingerprint(named, unreadable)
            memo.versions = versions
            memo.computed += 1
        return memo.value
