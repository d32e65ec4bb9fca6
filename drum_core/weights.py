"""Finding and loading the published PeCA adapters (`L`, `H`, `bigG`, `T5`).

A file is named for adapter `name` when its stem is `name` or ends in `_name` / `-name` (any
case; `L.safetensors`, `drum_L.safetensors`); exact names come first. The ComfyUI node applies
the same rule to the files of its `models/drum` folders. Search order, in a folder and its
`weight/` subfolder (the hub layout):

    1. the folders given (`--adapters`; Python: `adapters=` of the diffusers helpers, `source=` of
       `load_adapters`), else every folder in $DRUM_WEIGHTS
       (os.pathsep-separated) and ComfyUI's `models/drum` when this pack sits in
       `ComfyUI/custom_nodes/`;
    2. the Hugging Face hub repo `Burf/DrUM` through huggingface_hub (its local cache only
       when HF_HUB_OFFLINE is set).

Nothing found: AdapterNotFoundError, saying what to download, from where, and where to put it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from .adapter_names import ADAPTER_NAMES
from .peca import PeCA, PeCAFormatError

HUB_REPO = "Burf/DrUM"
HUB_FOLDER = "weight"
HUB_PAGE = "https://huggingface.co/Burf/DrUM/tree/main/weight"
ENV_VAR = "DRUM_WEIGHTS"
_TRUE = {"1", "true", "yes", "on"}


class AdapterNotFoundError(FileNotFoundError):
    """Adapter files that are neither in the searched folders nor obtainable from the hub."""

    def __init__(self, names: Sequence[str], searched: Sequence[Path], hub_note: str):
        self.names = list(names)
        self.searched = list(searched)
        files = ", ".join(f"{name}.safetensors" for name in names)
        folders = "\n".join(f"    {folder}" for folder in searched) or "    (none: no folder given, $DRUM_WEIGHTS unset)"
        super().__init__(
            f"DrUM adapter weights not found: {files}.\n"
            f"Searched these folders and their weight/ subfolders (for <name>.safetensors, then *_<name>.safetensors):\n{folders}\n"
            f"Hugging Face hub: {hub_note}.\n"
            f"Download {files} from {HUB_PAGE} and put them in a folder passed with --adapters (Python: adapters=), "
            f"or in a folder named by the {ENV_VAR} environment variable, or in ComfyUI's models/drum folder."
        )


def _offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE:
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


def comfyui_models_dir() -> Path | None:
    """`ComfyUI/models/drum` when this package lives in `ComfyUI/custom_nodes/<pack>/drum_core`."""
    pack = Path(__file__).resolve().parent.parent
    if pack.parent.name != "custom_nodes":
        return None
    return pack.parent.parent / "models" / "drum"


def default_search_dirs() -> list[Path]:
    """$DRUM_WEIGHTS folders, then ComfyUI's models/drum when installed as a node pack."""
    folders = [Path(p).expanduser() for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p.strip()]
    comfy = comfyui_models_dir()
    if comfy is not None:
        folders.append(comfy)
    return folders


def adapter_files(files: Iterable[str], name: str) -> list[str]:
    """The `.safetensors` files (paths, any folder) named for adapter `name`, best first.

    Stem `name` first, then stems ending in `_name` or `-name` (any case); given order within each.
    """
    wanted = name.lower()
    exact, suffixed = [], []
    for file in files:
        stem, extension = os.path.splitext(os.path.basename(file))
        if extension != ".safetensors":
            continue
        if stem.lower() == wanted:
            exact.append(file)
        elif stem.lower().endswith(("_" + wanted, "-" + wanted)):
            suffixed.append(file)
    return exact + suffixed


def _local(name: str, search_dirs: Iterable[Path]) -> Path | None:
    """The first file named for `name` in the folders, each folder before its weight/ subfolder."""
    for folder in search_dirs:
        files = [path for where in (folder, folder / HUB_FOLDER) if where.is_dir() for path in sorted(where.iterdir()) if path.is_file()]
        found = adapter_files([str(path) for path in files], name)
        if found:
            return Path(found[0])
    return None


def _from_hub(name: str) -> tuple[Path | None, str]:
    """(path, "") from the hub (or its cache when offline), else (None, why not)."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        return None, "not tried, huggingface_hub is not installed (pip install huggingface_hub)"
    offline = _offline()
    try:
        return Path(hf_hub_download(HUB_REPO, f"{HUB_FOLDER}/{name}.safetensors", local_files_only=offline)), ""
    except Exception as error:  # offline, no network, gated, missing: all reported to the user
        if offline:
            return None, f"HF_HUB_OFFLINE is set and {HUB_REPO}/{HUB_FOLDER}/{name}.safetensors is not in the local hub cache"
        return None, f"downloading {HUB_REPO}/{HUB_FOLDER}/{name}.safetensors failed ({type(error).__name__}: {error})"


def _check_name(name: str) -> None:
    if name not in ADAPTER_NAMES:
        raise ValueError(f"unknown DrUM adapter {name!r}; the published adapters are {', '.join(ADAPTER_NAMES)}")


def find_adapter(name: str, search_dirs: Iterable[str | os.PathLike] | None = None, hub: bool = True) -> Path:
    """The file of adapter `name` ("L", "H", "bigG", "T5"); see the module docstring for the order."""
    return find_adapters([name], search_dirs, hub)[name]


def find_adapters(names: Sequence[str], search_dirs: Iterable[str | os.PathLike] | None = None, hub: bool = True) -> dict[str, Path]:
    """Files of every adapter in `names`; one AdapterNotFoundError listing all that are missing."""
    folders = default_search_dirs() if search_dirs is None else [Path(p).expanduser() for p in search_dirs]
    found: dict[str, Path] = {}
    missing: list[str] = []
    notes: list[str] = []
    for name in names:
        _check_name(name)
        path = _local(name, folders)
        if path is None and hub:
            path, note = _from_hub(name)
            notes.append(note)
        if path is None:
            missing.append(name)
        else:
            found[name] = path
    if missing:
        hub_note = "; ".join(dict.fromkeys(n for n in notes if n)) or "not tried (hub=False)"
        raise AdapterNotFoundError(missing, folders, hub_note)
    return found


def load_adapters(
    names: Sequence[str], source: str | os.PathLike | None = None, hub: bool = True, device: str | None = None
) -> dict[str, PeCA]:
    """Load adapters `names` from folder `source` (else the default folders), then the hub.

    Returns {name: PeCA} in eval mode, float32, on `device` (default CPU).
    """
    paths = find_adapters(names, None if source is None else [source], hub)
    adapters = {}
    for name, path in paths.items():
        adapter = PeCA.from_file(path)
        published = adapter.config.name
        if published is not None and published != name:
            raise PeCAFormatError(f"{path}: this file holds the {published} adapter, not {name}")
        adapters[name] = adapter.to(device) if device is not None else adapter
    return adapters


def hub_location(repo_id: str, flag: str, timeout: float = 10.0) -> str:
    """Where to load the hub model `repo_id` (given as `flag`) from, decided with one quick request, so that an
    unreachable hub or a wrong id ends in one line instead of a long series of retries:

    - the id itself when the hub answers for it (the loader then downloads or reuses its cache);
    - the local snapshot folder when the hub cannot be reached (or HF_HUB_OFFLINE is set) and the
      model is in the local hub cache;
    - otherwise ValueError: the model could not be reached, and how to point `flag` at a local folder."""
    local = f"download it where there is network (hf download {repo_id} --local-dir FOLDER) and pass {flag} FOLDER"
    try:
        from huggingface_hub import HfApi, snapshot_download
        from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError
        from huggingface_hub.utils import validate_repo_id
    except ImportError:
        raise ValueError(f"{flag} {repo_id}: reading a hub id needs huggingface_hub (pip install huggingface_hub), or {local}") from None

    def cached() -> str | None:
        try:
            return snapshot_download(repo_id, local_files_only=True)
        except Exception:  # noqa: BLE001 - whatever the cache lacks, the answer is "not cached"
            return None

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise ValueError(f"{flag} {repo_id}: neither a folder nor a Hugging Face hub id (namespace/name)") from None
    if _offline():
        found = cached()
        if found is None:
            raise ValueError(f"{flag} {repo_id}: HF_HUB_OFFLINE is set and the model is not in the local hub cache; {local}")
        return found
    try:
        HfApi().repo_info(repo_id, timeout=timeout)
    except GatedRepoError:
        return repo_id  # gated: the loader's own message says how to get access
    except RepositoryNotFoundError:
        found = cached()
        if found is None:
            raise ValueError(
                f"{flag} {repo_id}: no such model on the Hugging Face hub (or it is private: log in with `hf auth login`); "
                f"check the id, or pass {flag} a local folder"
            ) from None
        return found
    except Exception as error:  # noqa: BLE001 - no network, DNS, proxy, timeout, server error: the hub cannot be reached
        found = cached()
        if found is None:
            reason = type(error).__name__
            raise ValueError(
                f"{flag} {repo_id}: the Hugging Face hub could not be reached ({reason}) and the model is not cached; {local}"
            ) from None
        return found
    return repo_id
