"""The one module that touches ComfyUI's CLIP object (docs/comfyui.md, docs/method.md §5).

`ComfySubEncoder` implements `drum_core.backend.TextEncoderBackend` for one sub-encoder of a
`comfy.sd.CLIP` (clip_l, clip_h, clip_g, t5xxl). It tokenises with the CLIP object's own
tokenizer and runs the sub-encoder's transformer directly, so PeCA sees RAW hidden states
(before the final LayerNorm) that ComfyUI's own encode never returns. Nothing is left
modified on the shared modules (`clip.clone()` shares them): options are only reset to their
defaults, the layer to read is passed per call.

Layers: -1 is the top layer of the stack as docs/method.md defines it. For SD2 that is ComfyUI's
-2 of the 24-layer clip_h (the published H adapter was built on the 23-layer diffusers
encoder), so that encoder reads ComfyUI layer `layer - 1`.

Execution mirrors ComfyUI's own encode (`comfy.sd.CLIP.encode_from_tokens`), by feature
detection so one code path serves ComfyUI 0.3.51 to the newest: the encoders run on the
patcher's load device, with the sub-encoder's `execution_device` set where ComfyUI has that
option and inside `comfy.model_management.cuda_device_context` where it exists; `clip.load_model`
gets the tokens where it takes them. Under dynamic VRAM the weights stay on the offload device and
LoRAs are applied as ComfyUI casts them for the load device, so computing anywhere else would drop
them. Before an encoder's states are used, `check_host` verifies once per fingerprint that this
path reproduces ComfyUI's own encode (HostMismatchError otherwise); the pack's state remembers the
fingerprints that passed (`DrumState.host_checked`, bounded) and the identity tokens fingerprints
use (`DrumState.identities`): this module keeps nothing between calls.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import comfy.model_management
import comfy.utils
import torch

from drum_core.backend import CLIP_TOKENS, T5_TOKENS, Encoding
from drum_core.fingerprint import Identities, WeightsFingerprint, update_tensor
from drum_core.personalizer import FAMILIES, T5Conventions, UnsupportedFamilyError, detect_family, supported_families
from drum_core.project import ISSUES_URL

if TYPE_CHECKING:
    from .state import DrumState

try:
    from comfyui_version import __version__ as COMFYUI_VERSION
except ImportError:  # a ComfyUI tree without its version file
    COMFYUI_VERSION = "unknown"

# attribute of a sub-encoder on cond_stage_model -> (Personalizer name, width): the encoders DrUM has adapters for
STREAMS = {"clip_l": ("l", 768), "clip_h": ("h", 1024), "clip_g": ("g", 1280), "t5xxl": ("t5", 4096)}
PASSTHROUGH_EXTRAS = {"llama": "conditioning_llama3"}  # passed-through stream -> the conditioning extra ComfyUI puts it in
ENCODER_NAMES = {name for name, _width in STREAMS.values()}
SLOTS = (*STREAMS, "llama")  # attributes a multi-encoder stack keeps as None when that encoder is not loaded (SD3, HiDream)
REFUSED = {  # the encoder sets of families DrUM refuses (docs/comfyui.md "Families"): what they are, and why
    frozenset({"l", "llama"}): "HunyuanVideo: its prompt is carried by the Llama stream, which has no DrUM adapter",
    frozenset({"l", "qwen25_7b"}): "Kandinsky 5: its prompt is carried by the Qwen2.5-VL stream, which has no DrUM adapter",
    frozenset({"gemma2_2b"}): "Lumina 2: a Gemma 2 text encoder, which has no DrUM adapter",
    frozenset({"gemma3_4b"}): "a Gemma 3 text encoder (Lumina family), which has no DrUM adapter",
    frozenset({"qwen25_7b"}): "Qwen-Image: a Qwen2.5-VL text encoder, which has no DrUM adapter",
    frozenset({"qwen25_7b", "byt5_small"}): "HunyuanImage: Qwen2.5-VL and ByT5 text encoders, which have no DrUM adapter",
    frozenset({"qwen25_3b"}): "OmniGen2: a Qwen2.5 text encoder, which has no DrUM adapter",
    frozenset({"umt5xxl"}): "Wan: a umT5-XXL text encoder, not the T5-XXL v1.1 the T5 adapter was trained on",
    frozenset({"t5xxl (old T5)"}): "Cosmos: the older T5 (1024 wide, ReLU feed-forward), not the T5-XXL v1.1 the T5 adapter reads",
    frozenset({"clip_l (Long-CLIP)"}): "Long-CLIP L: more than 77 positions, not the 77-token CLIP-L the L adapter reads",
}
CHECK_PROMPT = "a lighthouse on a rocky coast at dusk, oil painting"  # the self-check's fixed prompt
CHECK_TOLERANCE = 1e-4  # largest difference allowed, relative to the largest value of ComfyUI's output (float32)


class HostMismatchError(RuntimeError):
    """The pack's raw-state path no longer reproduces this ComfyUI's own text encode."""


class HostIsolationError(RuntimeError):
    """The CLIP is a handle without the text encoders' modules (process isolation, the secure node SDK)."""


def require_in_process(clip) -> None:
    """HostIsolationError unless `clip` is ComfyUI's CLIP object with its modules and patcher in this process.

    Under ComfyUI's process isolation (`--use-process-isolation`, pyisolate) or its secure node SDK, a node gets a
    proxy / reference (the SDK's ClipRef: tokenize, encode, encode_token_weights_component) with no module to read
    raw layer states from; DrUM cannot personalize through it (docs/comfyui.md "Process isolation and the secure SDK")."""
    model = getattr(clip, "cond_stage_model", None)
    if isinstance(model, torch.nn.Module) and hasattr(clip, "patcher") and callable(getattr(clip, "load_model", None)):
        return
    raise HostIsolationError(
        f"DrUM needs ComfyUI's CLIP object in its own process, but got a {type(clip).__module__}.{type(clip).__qualname__} "
        "without the text encoders' modules (a proxy of ComfyUI's process isolation or a reference of the secure node "
        "SDK). DrUM reads raw layer states from the encoders, which such a handle does not expose: run ComfyUI-DrUM "
        "in-process (do not give it a pyisolate.yaml with 'isolated: true', or start ComfyUI without "
        "--use-process-isolation)."
    )


class ComfySubEncoder:
    """One ComfyUI sub-encoder seen as a TextEncoderBackend (float32 results; states on the CPU), at `family`'s conventions.
    `identities`: the tokens its fingerprint gives patches, hooks and unreadable tensors (the pack state's)."""

    def __init__(self, clip, attribute: str, family: str, identities: Identities):
        self.clip = clip
        self.attribute = attribute
        self.name = STREAMS[attribute][0]  # Personalizer name: "l", "h", "g", "t5"
        self.family = family
        self.layer_shift = -1 if self.name == "h" else 0  # ComfyUI layer = backend layer + layer_shift (module docstring)
        self.module = getattr(clip.cond_stage_model, attribute)
        self.tokenizer = host_tokenizer(clip, attribute)
        self.kind = "clip" if hasattr(self.module.transformer, "text_model") else "t5"
        self.width = self.module.transformer.get_input_embeddings().weight.shape[1]
        self.tokens_per_prompt = CLIP_TOKENS if self.kind == "clip" else T5_TOKENS
        # ComfyUI discards the pooled output of an encoder its family does not pool, and its projection may not even be
        # loaded (SDXL checkpoints carry no CLIP-L text projection: ComfyUI leaves it uninitialized). Its coreset
        # features stay unprojected, like the diffusers encoder's (CLIPTextModel, no projection).
        self.projects_pooled = self.kind == "clip" and self.module.return_projected_pooled and self.name in FAMILIES[family].pooled_encoders
        self.fingerprint = _fingerprint(clip, attribute, self.module, self.conventions(), identities)

    def conventions(self) -> str:
        """What decides this encoder's outputs besides its weights: the layer shift, the pooled projection, and for T5
        the host's token counts and attention mask (masked and unmasked states differ)."""
        if self.kind == "clip":
            return f"shift{self.layer_shift}|projected{self.projects_pooled}"
        t5 = host_t5_conventions(self.clip, self.attribute)
        return f"t5len{T5_TOKENS}|min{t5.min_tokens}|max{t5.max_tokens}|mask{t5.attention_mask}"

    # ------------------------------------------------------------------ tokens
    def _family_tokens(self, prompt: str) -> list[list]:
        """The host's own token lists of `prompt` (its tokenizer and options): CLIP 77-token chunks, T5 its first chunk
        (ids, or embedding tensors). Emphasis weights like "(word:1.2)" are parsed away and not applied: the adapter
        reads the plain states."""
        pairs = self.tokenizer.tokenize_with_weights(prompt, False, tokenizer_options=self.clip.tokenizer_options)
        chunks = [[token for token, _weight in chunk] for chunk in pairs]
        return chunks if self.kind == "clip" else chunks[:1]

    def _chunks(self, prompt: str) -> list[list]:
        """Tokens of `prompt`: CLIP 77-token chunks; T5 one list of exactly 256 (the host's tokens, cut with EOS kept or
        padded with its pad token)."""
        chunks = self._family_tokens(prompt)
        if self.kind == "clip":
            return chunks
        ids = chunks[0]
        if len(ids) > T5_TOKENS:
            return [ids[: T5_TOKENS - 1] + [self.module.special_tokens["end"]]]
        return [ids + [self.module.special_tokens["pad"]] * (T5_TOKENS - len(ids))]

    def min_padding(self, prompt: str) -> int:
        """Pad tokens the host appends after the EOS of `prompt`'s first chunk before its minimum length applies: its
        `min_padding` (T5TokenizerOptions, in the CLIP's tokenizer options, else the tokenizer's own; 0 where none),
        which ComfyUI's tokenizer gives the last chunk only (a prompt longer than HiDream's 128 tokens: none)."""
        key = self.tokenizer.embedding_key
        padding = self.clip.tokenizer_options.get(f"{key}_min_padding", getattr(self.tokenizer, "min_padding", None))
        if not padding:
            return 0
        return (
            int(padding)
            if len(self.tokenizer.tokenize_with_weights(prompt, False, tokenizer_options=self.clip.tokenizer_options)) == 1
            else 0
        )

    def token_count(self, prompt: str) -> int:
        """T5 tokens of `prompt` up to and including its EOS, as the host tokenizes it (what its attention mask keeps)."""
        ids = self._family_tokens(prompt)[0]
        end = self.module.special_tokens["end"]
        return next((i + 1 for i, token in enumerate(ids) if isinstance(token, int) and token == end), len(ids))

    # ------------------------------------------------------------------ execution
    @contextlib.contextmanager
    def _executing(self) -> Iterator[torch.device]:
        """Run as ComfyUI's encode does; yields the execution device (never read off a weight tensor).

        The device is the patcher's load device. Where the sub-encoder has the `execution_device`
        clip option it is set for the call and restored afterwards (the modules are shared by
        `clip.clone()`); `cuda_device_context` is entered where this ComfyUI has it.
        """
        device = torch.device(self.clip.patcher.load_device)
        settable = hasattr(self.module, "execution_device")
        previous = getattr(self.module, "execution_device", None)
        device_context = getattr(comfy.model_management, "cuda_device_context", None)
        if settable:
            self.module.set_clip_options({"execution_device": device})
        try:
            with device_context(device) if device_context is not None else contextlib.nullcontext(), torch.inference_mode():
                yield device
        finally:
            if settable:
                self.module.set_clip_options({"execution_device": previous})

    def _pass(self, chunks: list[list[int]], layers: Sequence[int], eos: bool = False, eos_layer: int = -1) -> Encoding:
        """ONE transformer pass over N token lists: raw states [N, T, E] (float32, CPU) of every backend layer in
        `layers` and, if `eos`, the raw state of `eos_layer` at each EOS [N, E] (T5: its output)."""
        sub = self.module
        wanted = set(layers) | ({eos_layer} if eos else set())
        with self._executing() as device:
            embeds, mask, num_tokens, info = sub.process_tokens(chunks, device)
            if self.kind == "t5":
                out = sub.transformer(
                    None, mask if sub.enable_attention_masks else None, embeds=embeds, num_tokens=num_tokens, dtype=torch.float32
                )
                states = dict.fromkeys(wanted, out[0].float().cpu())
            else:
                states = self._clip_states(embeds, num_tokens, info, wanted)
        at_eos = None
        if eos:
            at_eos = states[eos_layer][torch.arange(len(num_tokens)), torch.tensor(num_tokens) - 1]
        return Encoding({layer: states[layer] for layer in layers}, at_eos)

    def _clip_states(self, embeds, num_tokens, info, layers: set[int]) -> dict[int, torch.Tensor]:
        """{backend layer: raw states} from one pass of the CLIP transformer.

        ComfyUI returns one raw intermediate layer (`intermediate_output`, its final LayerNorm off) or all of them
        ("all"); its last layer's raw states are read as they enter the final LayerNorm (a hook for this call only).
        """
        comfy_layers = {layer + self.layer_shift: layer for layer in layers}  # ComfyUI layer -> backend layer
        inner = [layer for layer in comfy_layers if layer != -1]
        top: list[torch.Tensor] = []
        norm = self.module.transformer.text_model.final_layer_norm
        reads_top = len(inner) == 1 and -1 in comfy_layers
        hook = norm.register_forward_pre_hook(lambda _module, args: top.append(args[0])) if reads_top else None
        try:
            out = self.module.transformer(
                None,
                None,
                embeds=embeds,
                num_tokens=num_tokens,
                intermediate_output=(inner[0] if len(inner) == 1 else "all") if inner else -1,
                final_layer_norm_intermediate=False,
                dtype=torch.float32,
                embeds_info=info,
            )
        finally:
            if hook is not None:
                hook.remove()
        if len(inner) > 1:  # [N, layers, T, E]
            states = {comfy_layers[layer]: out[1][:, layer] for layer in comfy_layers}
        else:
            states = {comfy_layers[layer]: out[1] for layer in inner} if inner else {comfy_layers[-1]: out[1]}
            if reads_top:
                if len(top) != 1:
                    raise HostMismatchError("DrUM: this ComfyUI's CLIP did not pass its last layer through final_layer_norm once")
                states[comfy_layers[-1]] = top[0]
        return {layer: value.float().cpu() for layer, value in states.items()}

    # ------------------------------------------------------------------ TextEncoderBackend
    def encode(self, prompts: Sequence[str], layers: Sequence[int] = (-1,), eos: bool = False) -> Encoding:
        """One pass: raw states [N, T, E] of each of `layers`, raw EOS states [N, E] if `pooled`; a long CLIP prompt keeps
        its first 77-token chunk."""
        return self._pass([self._chunks(p)[0] for p in prompts], layers, eos)

    def hidden_states(self, prompts: Sequence[str], layer: int = -1) -> torch.Tensor:
        """Raw states [N, T, E]; a long CLIP prompt keeps its first 77-token chunk."""
        return self.encode(prompts, (layer,)).states[layer]

    def prompt_chunks(self, prompt: str, layers: Sequence[int] = (-1,), eos: bool = False) -> Encoding:
        """One pass over every 77-token chunk of a (long) CLIP prompt: states [C, 77, E] per layer, EOS states [C, E]."""
        return self._pass(self._chunks(prompt), layers, eos)

    def empty_query(self) -> torch.Tensor:
        """CLIP [1, 78, E] (raw states of "" + raw EOS state); T5 [1, 256, E]."""
        if self.kind == "t5":
            return self.hidden_states([""])
        encoding = self.encode([""], (-1,), eos=True)
        return torch.cat([encoding.states[-1], encoding.eos[:, None]], 1)

    def final_norm(self, states: torch.Tensor) -> torch.Tensor:
        """The final LayerNorm ([..., E]), computed on the execution device; float32 on the states' device; identity for T5."""
        if self.kind == "t5":
            return states
        return self._apply(self.module.transformer.text_model.final_layer_norm, states)

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """[N, E] -> [N, P]: the text projection where this encoder's pooled output is projected (execution device)."""
        if not self.projects_pooled:
            return pooled
        return self._apply(self.module.transformer.text_projection, pooled)

    def _apply(self, layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """`layer(x)` on the execution device (ComfyUI's ops cast the weights there, LoRAs included), float32 on x's device."""
        with self._executing() as device:
            return layer(x.to(device, torch.float32)).float().to(x.device)

    def pooled_features(self, prompts: Sequence[str]) -> torch.Tensor:
        """[N, P] = project(final_norm(raw top-layer EOS state)): ComfyUI's pooled_output."""
        return self.project(self.final_norm(self.encode(prompts, (), eos=True).eos))

    # ------------------------------------------------------------------ host self-check
    def check_host(self) -> None:
        """Raise HostMismatchError unless the raw-state path reproduces ComfyUI's own encode of CHECK_PROMPT.

        ComfyUI's side is the sub-encoder's public `encode_token_weights` with its default options
        (what CLIPTextEncode runs for it) on the host's own tokens. Ours, at the family's convention
        (docs/method.md §5): tokens = raw states of the family's token layer, final LayerNorm where
        the family applies it (SD1: last layer + LN; SD2: ComfyUI's penultimate + LN; SDXL/SD3: raw
        layer -2; T5: the output, with the host's attention mask where it uses one); pooled =
        projection(LN(raw EOS state of ComfyUI's last layer)), as ComfyUI pools. Only what the family
        uses is compared: FLUX's and HiDream's CLIP-L/G their pooled vectors only, SDXL's CLIP-L its tokens only.
        """
        tokens = self._family_tokens(CHECK_PROMPT)
        pairs = [[(token, 1.0) for token in chunk] for chunk in tokens]
        with self._executing():
            comfy_tokens, comfy_pooled = self.module.encode_token_weights(pairs)[:2]
        family = self.family
        spec = FAMILIES[family]
        compared = {}
        if self.kind == "t5":
            compared["tokens"] = (self._pass(tokens, [-1]).states[-1], comfy_tokens)
        else:
            if self.name in spec.token_encoders:
                states = self.hidden_states([CHECK_PROMPT], spec.token_layer)
                compared["tokens"] = (self.final_norm(states) if spec.normalize_tokens else states, comfy_tokens)
            if self.name in spec.pooled_encoders:  # others' pooled is discarded (SDXL's CLIP-L projection is not even loaded)
                top = -1 - self.layer_shift  # ComfyUI's last layer, which it pools
                eos = self._pass(tokens[:1], (), eos=True, eos_layer=top).eos
                compared["pooled"] = (self.project(self.final_norm(eos)), comfy_pooled)
        for what, (ours, theirs) in compared.items():
            theirs = theirs.float().cpu()
            difference = (ours.float().cpu() - theirs).abs().max().item() if ours.shape == theirs.shape else float("inf")
            if not difference <= CHECK_TOLERANCE * max(1.0, theirs.abs().max().item()):
                raise HostMismatchError(
                    f"DrUM host self-check failed for the {self.attribute} text encoder ({family}): the pack's raw-state path "
                    f"gives {what} {list(ours.shape)} that differ from ComfyUI's own text encode {list(theirs.shape)} by up to "
                    f"{difference:.3g} (tolerance {CHECK_TOLERANCE:g} relative) on ComfyUI {COMFYUI_VERSION}. This ComfyUI encodes "
                    "text differently from what this DrUM version was built for, so its conditioning would be wrong and the run "
                    f"stops. Update ComfyUI-DrUM; if this is the newest version, report this message at {ISSUES_URL}"
                )


def _digest_value(digest, value: object, identities: Identities, depth: int = 0) -> None:
    """Feed a patch, wrapper or injection: tensors by content, plain values by repr, containers item by item,
    weight adapters (`.weights`) by their tensors, anything else (functions, hooks) by identity (`identities`)."""
    if isinstance(value, torch.Tensor):
        update_tensor(digest, value, identities.token)
    elif value is None or isinstance(value, (bool, int, float, str, torch.dtype, torch.device)):
        digest.update(repr(value).encode())
    elif isinstance(value, (list, tuple)):
        digest.update(f"[{len(value)}".encode())
        for item in value:
            _digest_value(digest, item, identities, depth + 1)
    elif isinstance(value, dict):
        digest.update(f"{{{len(value)}".encode())
        for key in sorted(value, key=str):
            digest.update(str(key).encode())
            _digest_value(digest, value[key], identities, depth + 1)
    elif depth < 4 and isinstance(getattr(value, "weights", None), (list, tuple, torch.Tensor)):
        digest.update(type(value).__qualname__.encode())
        _digest_value(digest, value.weights, identities, depth + 1)
    else:
        digest.update(f"{type(value).__qualname__}#{identities.token(value)}".encode())


def _fingerprint(clip, attribute: str, module: torch.nn.Module, conventions: str, identities: Identities) -> str:
    """Everything that decides this encoder's outputs: its conventions (ComfySubEncoder.conventions), weights, and the
    patcher's patches (LoRAs), weight wrappers, object patches, injections (bypass LoRAs) and forced hooks; what has no
    value to read counts by its token in `identities`."""
    digest = hashlib.sha256(f"comfy|{attribute}|{type(module).__name__}|{conventions}".encode())
    digest.update(WeightsFingerprint.of(module, identities.token).encode())  # drum_core's rule; one pass per weight version
    patcher = clip.patcher
    prefix = f"{attribute}."
    for name, patches in (("patches", patcher.patches), ("wrappers", getattr(patcher, "weight_wrapper_patches", {}))):
        for key in sorted(k for k in patches if k.startswith(prefix)):  # patches stay out of the weights under lowvram
            digest.update(f"{name}|{key}".encode())
            _digest_value(digest, patches[key], identities)
    digest.update(b"object_patches")
    _digest_value(digest, getattr(patcher, "object_patches", {}), identities)
    digest.update(b"injections")  # injections (bypass LoRAs) may touch any sub-encoder: all of them count
    _digest_value(digest, getattr(patcher, "injections", {}), identities)
    digest.update(b"forced_hooks")
    _digest_value(digest, getattr(patcher, "forced_hooks", None), identities)
    return digest.hexdigest()[:32]


def prepare(clip, text: str = "") -> None:
    """Load the encoders as ComfyUI's encode does (applies CLIP LoRAs; newer ComfyUI sizes the load by the
    tokens of `text`) and reset every sub-encoder option to its default. HostIsolationError for a CLIP proxy."""
    require_in_process(clip)
    if "tokens" in inspect.signature(clip.load_model).parameters:
        clip.load_model(clip.tokenize(text))
    else:
        clip.load_model()
    clip.cond_stage_model.reset_clip_options()


def host_tokenizer(clip, attribute: str):
    """The tokenizer of sub-encoder `attribute`: a multi-encoder tokenizer's attribute of that name, else the single
    tokenizer of an SD1Tokenizer-style wrapper (PixArt's and Mochi's are at `clip_t5xxl` for the model's `t5xxl`)."""
    tokenizer = getattr(clip.tokenizer, attribute, None)
    if tokenizer is None and isinstance(getattr(clip.tokenizer, "clip", None), str):
        tokenizer = getattr(clip.tokenizer, clip.tokenizer.clip, None)
    if tokenizer is None:
        raise HostMismatchError(f"DrUM: this ComfyUI's CLIP tokenizer ({type(clip.tokenizer).__name__}) has no tokenizer for {attribute}")
    return tokenizer


def host_t5_conventions(clip, attribute: str = "t5xxl") -> T5Conventions:
    """How the host tokenizes and runs its T5 (the tokenizer's min/max length with the CLIP's tokenizer options, the
    module's attention mask and whether its encode returns the mask)."""
    tokenizer = host_tokenizer(clip, attribute)
    key = tokenizer.embedding_key
    options = clip.tokenizer_options
    minimum = options.get(f"{key}_min_length", tokenizer.min_length) or 1
    maximum = tokenizer.max_length if tokenizer.max_length < 99999999 else None
    module = getattr(clip.cond_stage_model, attribute)
    return T5Conventions(minimum, maximum, bool(module.enable_attention_masks), bool(module.return_attention_masks))


def _stream_name(attribute: str, module: torch.nn.Module) -> str:
    """The encoder as DrUM names it: "l", "h", "g", "t5" where it is the encoder an adapter was trained on (width, T5
    v1.1's gated feed-forward, CLIP's 77 positions), else a description from the attribute ("llama", "t5xxl (old T5)")."""
    if attribute not in STREAMS:
        return attribute
    name, width = STREAMS[attribute]
    transformer = getattr(module, "transformer", None)
    embeddings = transformer.get_input_embeddings() if transformer is not None else None
    if embeddings is None or embeddings.weight.shape[-1] != width:
        return f"{attribute} (old T5)" if name == "t5" else f"{attribute} ({type(module).__name__})"
    if name == "t5":
        gated = any(key.endswith("DenseReluDense.wi_1.weight") for key, _ in transformer.named_parameters())
        return name if gated else f"{attribute} (old T5)"
    positions = transformer.text_model.embeddings.position_embedding.weight.shape[0]
    return name if positions == CLIP_TOKENS else f"{attribute} (Long-CLIP)"


def host_encoders(clip) -> tuple[dict[str, str], set[str]]:
    """({DrUM name: attribute} of the encoders the CLIP holds, the names of every slot of its stack, loaded or None).

    Read from the module tree only (names, shapes, flags): nothing is computed or hashed."""
    model = clip.cond_stage_model
    present = {}
    for attribute, child in model.named_children():
        if hasattr(child, "encode_token_weights") or hasattr(child, "transformer"):
            present[_stream_name(attribute, child)] = attribute
    empty = {STREAMS[a][0] if a in STREAMS else a for a in SLOTS if a in vars(model) and vars(model)[a] is None}
    return present, set(present) | empty


@dataclass(frozen=True)
class OpenedClip:
    """A CLIP opened once per node run: its family (known before anything is computed) and the sub-encoders that family
    personalizes, each checked against ComfyUI's own encode (`check_host`) once per fingerprint."""

    clip: object  # the comfy.sd.CLIP
    family: str
    encoders: dict[str, ComfySubEncoder]

    @property
    def label(self) -> str:
        return FAMILIES[self.family].label


def family_of(clip) -> str:
    """The family of `clip`'s exact encoder set (drum_core.personalizer.FAMILIES); UnsupportedFamilyError, naming the
    encoders found and the families supported, for any other set. Computes nothing. HostIsolationError for a CLIP proxy."""
    require_in_process(clip)
    present, slots = host_encoders(clip)
    t5 = host_t5_conventions(clip, present["t5"]) if "t5" in present else None
    try:
        return detect_family(present, stack=slots, t5=t5)
    except UnsupportedFamilyError as error:
        found = sorted(attribute if name in ENCODER_NAMES else name for name, attribute in present.items())
        known = REFUSED.get(frozenset(present))
        if known is None and "t5" in present and set(present) == {"t5"}:
            known = f"a T5-XXL whose conventions ({t5.min_tokens} tokens at least, attention mask {t5.attention_mask}) are no supported family's"
        why = known or str(error)
        raise UnsupportedFamilyError(
            f"DrUM cannot personalize this CLIP ({type(clip.cond_stage_model).__name__}, text encoders {', '.join(found) or 'none'}): "
            f"{why}. Supported families and their text encoders: {supported_families()}."
        ) from None


def open_clip(state: DrumState, clip, text: str = "") -> OpenedClip:
    """The family and its sub-encoders by Personalizer name ("l", "h", "g", "t5"): the family first (a refused set stops
    here, before anything is loaded or computed), then `prepare(clip, text)`, each encoder's fingerprint once (with
    `state.identities`), and the host self-check where `state.host_checked` does not hold it yet."""
    family = family_of(clip)
    prepare(clip, text)
    present, _slots = host_encoders(clip)
    encoders = {
        name: ComfySubEncoder(clip, present[name], family, state.identities) for name in FAMILIES[family].encoders if name in present
    }
    for encoder in encoders.values():
        if state.host_checked.get((family, encoder.fingerprint)) is None:
            encoder.check_host()
            state.host_checked.put((family, encoder.fingerprint), True)
    return OpenedClip(clip, family, encoders)


def token_layer(clip, family: str) -> int | None:
    """CLIPSetLastLayer (clip.layer_idx) in backend layers; None keeps the family default."""
    if clip.layer_idx is None:
        return None
    return clip.layer_idx + 1 if family == "sd2" else clip.layer_idx


def plain_conditioning(clip, text: str) -> list:
    """ComfyUI's own CLIPTextEncode output for `text` (the no-history result)."""
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def passthrough_extras(opened: OpenedClip, text: str) -> dict:
    """The conditioning extras of the streams `opened`'s family passes through untouched (HiDream's Llama states),
    exactly as ComfyUI's own encode of `text` gives them; {} for the other families."""
    keys = [PASSTHROUGH_EXTRAS[stream] for stream in FAMILIES[opened.family].passthrough]
    if not keys:
        return {}
    _cond, extras = plain_conditioning(opened.clip, text)[0]
    return {key: extras[key] for key in keys}


def hooks_extras(clip) -> dict:
    """Extras ComfyUI's text encode adds for this CLIP (scheduled hooks)."""
    return clip.add_hooks_to_dict({})


def output_device() -> torch.device:
    return comfy.model_management.intermediate_device()


def progress_reporter() -> Callable[[int, int], None]:
    """A Personalizer/EmbeddingCache progress callback: ComfyUI progress bar (of the running node) + interruption."""
    bar: list[comfy.utils.ProgressBar] = []

    def report(done: int, total: int) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        if not bar:
            bar.append(comfy.utils.ProgressBar(total))
        bar[0].update_absolute(done, total)

    return report
