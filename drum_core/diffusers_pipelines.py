"""Personalize diffusers pipelines: SD1, SD2, SDXL, SD3 and FLUX, fed through `prompt_embeds`.

    kwargs = personalize_pipeline(pipe, history, "a lighthouse at dusk", degree=0.3)
    image = pipe(**kwargs, num_inference_steps=30).images[0]

The family comes from which text encoders the pipeline holds and their configs, never from
a model name:

    slot            CLIP config                               T5 config
    text_encoder    "l"; "h" when it is the only encoder and   (not supported)
                    OpenCLIP-H-like (width 1024, or gelu)
    text_encoder_2  "g"                                       "t5" (FLUX)
    text_encoder_3  (not supported)                           "t5" (SD3)

Coreset features come from the first CLIP encoder (l, or h for SD2); pooled vectors are
projected where the pipeline projects them (SDXL g, SD3 l and g) and raw for FLUX's l.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import torch

from .adapter_names import ENCODER_ADAPTERS, PUBLISHED_SIZES
from .backend import T5_TOKENS, TextEncoderBackend
from .cache import EmbeddingCache
from .coreset import CORESET_MODES, DEFAULT_MAX_COUNT, coreset_sample, sample_count
from .defaults import DEGREE, RATIO, SEED, K
from .encoders import HFClipBackend, HFT5Backend
from .history import History
from .peca import PeCA
from .personalizer import Condition, Personalizer, detect_family, first_clip
from .profiles import Profile

SLOTS = (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2"), ("text_encoder_3", "tokenizer_3"))
CLIP_MODEL_TYPES = ("clip_text_model", "clip")
T5_MODEL_TYPES = ("t5", "umt5")
CFG_FAMILIES = ("sd1", "sd2", "sdxl", "sd3")  # pipelines that take negative_prompt_embeds by default
POOLED_FAMILIES = ("sdxl", "sd3", "flux")
UNPROJECTED_POOLED = {"flux": ("l",)}  # FLUX pools CLIP-L's pooler_output, not text_embeds

Progress = Callable[[str, int, int], None]  # (stage, done, total)


def _config_dict(config) -> dict:
    return config if isinstance(config, dict) else config.to_dict()


def encoder_names(configs: Mapping[str, object]) -> dict[str, str]:
    """{encoder name: slot} from {slot: transformers config or config dict} (absent slots skipped)."""
    present = {slot: _config_dict(c) for slot, c in configs.items() if c is not None}
    clip_slots = [slot for slot, c in present.items() if c.get("model_type") in CLIP_MODEL_TYPES]
    names = {}
    for slot, config in present.items():
        model_type = config.get("model_type")
        if model_type in T5_MODEL_TYPES:
            name = "t5"
        elif model_type in CLIP_MODEL_TYPES and slot == "text_encoder":
            name = "h" if len(present) == 1 and _openclip_h_like(config) else "l"
        elif model_type in CLIP_MODEL_TYPES and slot == "text_encoder_2":
            name = "g"
        else:
            raise ValueError(f"{slot}: a {model_type!r} text encoder is not supported by DrUM (CLIP in text_encoder/_2, T5 in _2/_3)")
        if name in names:
            raise ValueError(f"{slot} and {names[name]} both look like the {ENCODER_ADAPTERS[name]} encoder")
        names[name] = slot
    if not clip_slots and "t5" not in names:
        raise ValueError("the pipeline has no CLIP or T5 text encoder")
    return names


def _openclip_h_like(config: dict) -> bool:
    """SD2's OpenCLIP ViT-H tower: width 1024; at other (tiny) widths its gelu (CLIP-L: quick_gelu)."""
    width = config.get("hidden_size")
    if width in (PUBLISHED_SIZES["L"][1], PUBLISHED_SIZES["H"][1]):  # the real CLIP-L (768) or OpenCLIP-H (1024)
        return width == PUBLISHED_SIZES["H"][1]
    return config.get("hidden_act") == "gelu"


def pipeline_encoder_names(pipe) -> dict[str, str]:
    """{encoder name: slot} of a loaded diffusers pipeline."""
    return encoder_names({slot: getattr(getattr(pipe, slot, None), "config", None) for slot, _ in SLOTS})


def folder_encoder_names(model: str | os.PathLike) -> dict[str, str]:
    """{encoder name: slot} of a diffusers folder or hub id, from its configs only (no weights read)."""
    from diffusers import DiffusionPipeline
    from transformers import AutoConfig

    index = DiffusionPipeline.load_config(os.fspath(model))
    configs = {}
    for slot, _ in SLOTS:
        entry = index.get(slot)
        if entry and entry[0] is not None:
            configs[slot] = AutoConfig.from_pretrained(os.fspath(model), subfolder=slot).to_dict()
    return encoder_names(configs)


def pipeline_encoders(pipe) -> tuple[str, dict[str, TextEncoderBackend]]:
    """(family, {encoder name: backend}) built from the pipeline's own encoders and tokenizers."""
    names = pipeline_encoder_names(pipe)
    family = detect_family(names)
    if family == "sdxl" and getattr(pipe, "unet", None) is None and getattr(pipe, "transformer", None) is not None:
        family = "sd3"  # SD3 loaded with text_encoder_3=None: SDXL's two CLIPs, but an MMDiT denoiser
    backends: dict[str, TextEncoderBackend] = {}
    for name, slot in names.items():
        model, tokenizer = getattr(pipe, slot), getattr(pipe, dict(SLOTS)[slot])
        if tokenizer is None:
            raise ValueError(f"pipeline has {slot} but no {dict(SLOTS)[slot]}")
        if name == "t5":
            backends[name] = HFT5Backend(model, tokenizer)
        else:
            backends[name] = HFClipBackend(model, tokenizer, project_pooled=False if name in UNPROJECTED_POOLED.get(family, ()) else None)
    return family, backends


def profile_history(
    encoder: TextEncoderBackend,
    history: History,
    ratio: float = RATIO,
    max_count: int | None = DEFAULT_MAX_COUNT,
    k: int = K,
    seed: int = SEED,
    cache: EmbeddingCache | None = None,
    progress: Progress | None = None,
    diverse: bool = False,
) -> Profile:
    """Coreset-sample `history` on the pooled features [N, P] of `encoder` (docs/method.md §4); `diverse`: coreset_sample's mode."""
    if len(history.prompts) == 0:
        return Profile(history, torch.zeros(0, 0), [], encoder.fingerprint, {"ratio": ratio, "k": k, "seed": seed})
    count = sample_count(len(history.prompts), ratio, max_count=max_count or 0)  # None or 0: no limit
    cache = cache if cache is not None else EmbeddingCache()
    report = (lambda done, total: progress("reading history", done, total)) if progress else None
    features = cache.pooled_features(encoder, history.prompts, report)
    picks = coreset_sample(features, history.intensities, n=count, k=k, seed=seed, diverse=diverse).tolist()
    settings = {"ratio": ratio, "max_count": max_count, "k": k, "seed": seed, "mode": CORESET_MODES[diverse]}
    return Profile(history, features, picks, encoder.fingerprint, settings)


def _token_layer(family: str, clip_skip: int | None) -> int | None:
    """diffusers' clip_skip as a context layer: SD1/SD2 -(n+1), SDXL/SD3 -(n+2); None = family default."""
    if not clip_skip:
        return None
    if clip_skip < 0:
        raise ValueError(f"clip_skip must be >= 0, got {clip_skip}")
    return -(clip_skip + 1) if family in ("sd1", "sd2") else -(clip_skip + 2)


def _adapters_by_encoder(
    names: Sequence[str], adapters: Mapping[str, PeCA] | str | os.PathLike | None, device: torch.device
) -> dict[str, PeCA]:
    """{encoder name: PeCA}; `adapters` keyed by adapter name ("L") or encoder name ("l"), or a folder."""
    if adapters is None or isinstance(adapters, (str, os.PathLike)):
        from .weights import load_adapters

        loaded = load_adapters([ENCODER_ADAPTERS[n] for n in names], adapters, device=device)
        return {n: loaded[ENCODER_ADAPTERS[n]] for n in names}
    chosen = {}
    for name in names:
        adapter = adapters.get(ENCODER_ADAPTERS[name], adapters.get(name))
        if adapter is not None:
            chosen[name] = adapter
    return chosen


class PipelinePersonalizer:
    """DrUM for one loaded diffusers pipeline: its encoders, their adapters, one history at a time.

    `adapters`: {name: PeCA} keyed "L"/"H"/"bigG"/"T5" (or "l"/"h"/"g"/"t5"), a folder, or None
    (the default folders, then the hub; see drum_core.weights). `progress(stage, done, total)`
    is called while the history is read and its references encoded (raise to interrupt).
    """

    def __init__(
        self,
        pipe,
        adapters: Mapping[str, PeCA] | str | os.PathLike | None = None,
        cache: EmbeddingCache | None = None,
        clip_skip: int | None = None,
        progress: Progress | None = None,
    ):
        self.pipe = pipe
        self.family, self.backends = pipeline_encoders(pipe)
        denoiser = pipe.unet if getattr(pipe, "unet", None) is not None else pipe.transformer
        self.device, self.dtype = pipe._execution_device, denoiser.dtype
        self.cache = cache if cache is not None else EmbeddingCache()
        self.progress = progress
        report = (lambda done, total: progress("encoding references", done, total)) if progress else None
        self.personalizer = Personalizer(
            self.family,
            self.backends,
            _adapters_by_encoder(list(self.backends), adapters, self.device),
            self.cache,
            token_layer=_token_layer(self.family, clip_skip),
            progress=report,
        )
        self.profile: Profile | None = None

    def set_history(
        self,
        history: History,
        ratio: float = RATIO,
        max_count: int | None = DEFAULT_MAX_COUNT,
        k: int = K,
        seed: int = SEED,
        diverse: bool = False,
    ) -> Profile:
        """Coreset-sample `history`, encode the picked references; returns the profile (history, features, picks)."""
        encoder = self.backends[first_clip(self.backends)]
        return self.set_profile(profile_history(encoder, history, ratio, max_count, k, seed, self.cache, self.progress, diverse))

    def set_profile(self, profile: Profile) -> Profile:
        """Use a profile's references (its picks; every prompt when it has none), e.g. `Profile.load(path)` from another
        machine: its features are reused for the same first CLIP encoder and re-encoded otherwise. Returns the profile used."""
        self.profile = profile.for_encoder(self.backends[first_clip(self.backends)], self.cache)
        references = self.profile.references
        features = self.profile.features[self.profile.picks] if self.profile.picks else self.profile.features
        self.personalizer.set_history(references.prompts, references.intensities, features=features)
        return self.profile

    def kwargs(self, prompt: str, degree: float | Sequence[float] = DEGREE, relevant: int = 0) -> dict:
        """Keyword arguments for `pipe(...)`; see personalize_pipeline. `relevant` m > 0: only the m
        references whose pooled features are most similar to the prompt's (Personalizer.condition)."""
        condition = self._without_t5(self.personalizer.condition(prompt, degree, relevant=relevant))
        kwargs = {"prompt_embeds": self._ready(condition.tokens)}
        if self.family in POOLED_FAMILIES:
            kwargs["pooled_prompt_embeds"] = self._ready(condition.pooled)
        if self.family in CFG_FAMILIES:
            if self.family == "sdxl" and self.pipe.config.force_zeros_for_empty_prompt:
                negative = Condition(torch.zeros_like(condition.tokens), torch.zeros_like(condition.pooled))
            else:
                negative = self._without_t5(self.personalizer.plain_condition("", condition.tokens.shape[0]))
            kwargs["negative_prompt_embeds"] = self._ready(negative.tokens)
            if self.family in POOLED_FAMILIES:
                kwargs["negative_pooled_prompt_embeds"] = self._ready(negative.pooled)
        return kwargs

    def _without_t5(self, condition: Condition) -> Condition:
        """SD3 without T5: diffusers appends zeros [B, 256, joint_attention_dim] where the T5 tokens go."""
        if self.family != "sd3" or "t5" in self.backends:
            return condition
        tokens = condition.tokens
        zeros = tokens.new_zeros(tokens.shape[0], T5_TOKENS, self.pipe.transformer.config.joint_attention_dim)
        return Condition(torch.cat([tokens, zeros], 1), condition.pooled)

    def _ready(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(device=self.device, dtype=self.dtype)


def personalize_pipeline(
    pipe,
    history: History,
    prompt: str,
    degree: float | Sequence[float] = DEGREE,
    adapters: Mapping[str, PeCA] | str | os.PathLike | None = None,
    ratio: float = RATIO,
    max_count: int | None = DEFAULT_MAX_COUNT,
    k: int = K,
    seed: int = SEED,
    cache: EmbeddingCache | None = None,
    clip_skip: int | None = None,
    progress: Progress | None = None,
) -> dict:
    """Keyword arguments for `pipe(...)` holding the personalized condition of `prompt`.

    SD1/SD2: prompt_embeds [B, 77, E]; SDXL: [B, 77, E_l + E_g] + pooled_prompt_embeds [B, P_g];
    SD3: prompt_embeds [B, 77 + 256, 4096] + pooled [B, P_l + P_g]; FLUX: prompt_embeds
    [B, 256, 4096] + pooled [B, E_l]. CFG families (not FLUX) also get negative_* for the empty
    negative prompt from the plain encoders (zeros for SDXL when its config forces zeros for an
    empty negative prompt, as the pipeline itself does). B = number of degrees.
    """
    session = PipelinePersonalizer(pipe, adapters, cache, clip_skip, progress)
    session.set_history(history, ratio, max_count, k, seed)
    return session.kwargs(prompt, degree)
