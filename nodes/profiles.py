"""DrUM Profile Save / Load: a user's profile as one `.safetensors` file in `models/drum_profiles`.

The file (drum_core.profiles) holds the prompts, intensities, timestamps, coreset picks, pooled
features and the fingerprint of the encoder that made them; it needs no history file to load.
The folder is registered like ComfyUI's model folders (`drum_profiles:` in extra_model_paths.yaml
adds more); Save writes only inside its first folder, Load lists and reads only `.safetensors`.
"""

from __future__ import annotations

import os

import folder_paths
from comfy_api.latest import io

from drum_core.profiles import Profile, ProfileFormatError

from . import clip_bridge
from .caches import first_clip_encoder, pooled_history_features
from .checked import CheckedNode
from .io_types import DrumHistory, DrumHistoryType
from .state import DrumState

FOLDER = "drum_profiles"
EXTENSION = ".safetensors"


def profile_of(state: DrumState, history: DrumHistory, clip, node: str) -> Profile:
    """The history's profile (Coreset Sampler, Profile Load), else one of its own features from `clip`, nothing picked."""
    if history.profile is not None:
        return history.profile
    if clip is None:
        raise ValueError(f"{node}: connect a DrUM Coreset Sampler output, or a CLIP to encode this history")
    if len(history.history) == 0:
        raise ValueError(f"{node}: the history is empty")
    opened = clip_bridge.open_clip(state, clip)
    return Profile(
        history.history, pooled_history_features(state, opened, history.history.prompts), [], first_clip_encoder(opened).fingerprint
    )


def save_path(name: str) -> tuple[str, str]:
    """(path, name with extension) inside the first drum_profiles folder for `name`; ValueError for names leading outside."""
    name = name.strip().replace("\\", "/")
    if not name:
        raise ValueError("give the profile a name")
    if not name.lower().endswith(EXTENSION):
        name += EXTENSION
    if os.path.isabs(name) or ".." in name.split("/"):
        raise ValueError(f"'{name}' must be a name inside the {FOLDER} folder (no absolute paths or '..')")
    root = os.path.realpath(folder_paths.get_folder_paths(FOLDER)[0])
    path = os.path.realpath(os.path.join(root, name))
    if os.path.commonpath([path, root]) != root:
        raise ValueError(f"'{name}' leads outside the {FOLDER} folder ({root})")
    return path, name


def profile_file(name: str) -> str:
    """The path of profile `name` in the drum_profiles folders; FileNotFoundError naming them."""
    path = folder_paths.get_full_path(FOLDER, name) if name.lower().endswith(EXTENSION) else None
    if path is None:
        raise FileNotFoundError(f"DrUM profile '{name}' not found in the {FOLDER} folders {folder_paths.get_folder_paths(FOLDER)}")
    return path


class DrUMProfileSave(CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DrUMProfileSave",
            display_name="DrUM Profile Save",
            category="conditioning/DrUM",
            description=(
                "Saves a history as a DrUM profile file in models/drum_profiles: prompts, intensities, timestamps, the coreset "
                "picks and the pooled CLIP features, with the fingerprint of the encoder that made them. DrUM Profile Load "
                "reads it on any machine, without the history file. Prompts are stored as text only."
            ),
            inputs=[
                DrumHistoryType.Input(
                    "history", tooltip="A DrUM Coreset Sampler output (saved with its picks), or any history (with a CLIP)."
                ),
                io.String.Input(
                    "name",
                    default="my_profile",
                    tooltip="File name inside models/drum_profiles (.safetensors is added; sub-folders allowed). An existing file "
                    "of that name is replaced.",
                ),
                io.Clip.Input("clip", optional=True, tooltip="Only needed for a history that did not come from the Coreset Sampler."),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def input_error(cls, values: dict) -> str | None:
        if values.get("name") is None:  # linked: checked at execution
            return None
        try:
            save_path(values["name"])
        except ValueError as error:
            return str(error)
        return None

    @classmethod
    def execute(cls, history: DrumHistory, name: str, clip=None) -> io.NodeOutput:
        cls.check_inputs(name=name)
        profile = profile_of(cls.state(), history, clip, "DrUM Profile Save")
        path, name = save_path(name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        profile.save(path)
        return io.NodeOutput(ui={"drum_profile": [{"file": name, "count": profile.total, "picks": len(profile.picks)}]})


class DrUMProfileLoad(CheckedNode):
    LISTED_ELSEWHERE = ("file",)  # checked by reading the profile

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DrUMProfileLoad",
            display_name="DrUM Profile Load",
            category="conditioning/DrUM",
            description=(
                "Loads a DrUM profile file from models/drum_profiles (written by DrUM Profile Save or `drum profile --save`). "
                "Its features are used as saved when this CLIP's first encoder made them, and re-encoded (cached) otherwise. "
                "A file that is not a profile, is truncated or was changed after saving stops the run with an error."
            ),
            inputs=[
                io.Combo.Input("file", options=folder_paths.get_filename_list(FOLDER), tooltip="A profile file in models/drum_profiles."),
                io.Clip.Input(
                    "clip", tooltip="The model's text encoders: the features are checked against (or made by) its first CLIP encoder."
                ),
            ],
            outputs=[
                DrumHistoryType.Output(
                    display_name="coreset",
                    tooltip="The profile's picked prompts with their intensities (every prompt when the profile has no picks).",
                ),
                DrumHistoryType.Output(display_name="history", tooltip="The profile's whole history (e.g. for another Coreset Sampler)."),
            ],
        )

    @classmethod
    def input_error(cls, values: dict) -> str | None:
        if values.get("file") is None:  # linked: checked at execution
            return None
        try:
            Profile.load(profile_file(values["file"]))
        except (OSError, ProfileFormatError) as error:
            return str(error)
        return None

    @classmethod
    def fingerprint_inputs(cls, file: str, clip) -> str:
        """Changes when the file is re-saved, so a new profile is read again."""
        if file is None:  # linked, not computed yet
            return ""
        try:
            stat = os.stat(profile_file(file))
        except OSError:
            return file
        return f"{file}|{stat.st_size}|{stat.st_mtime_ns}"

    @classmethod
    def execute(cls, file: str, clip) -> io.NodeOutput:
        cls.check_inputs(file=file)
        saved = Profile.load(profile_file(file))
        state = cls.state()
        profile = saved.for_encoder(
            first_clip_encoder(clip_bridge.open_clip(state, clip)), state.embeddings, clip_bridge.progress_reporter()
        )
        coreset = DrumHistory(profile.references, profile)
        return io.NodeOutput(coreset, DrumHistory(profile.history, profile), ui={"drum_picks": coreset.preview(limit=len(coreset.history))})


NODES = [DrUMProfileSave, DrUMProfileLoad]
