"""One user at a time: the history split into targets and references, every variant's condition and image, their scores."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..cache import EmbeddingCache
from ..defaults import DEGREE, RATIO, SEED, K
from ..history import History
from ..peca import PeCA
from ..taste import shuffled_history, text_align_features
from .clip_scorer import ClipScorer
from .scores import SCORES, target_history_scores
from .variants import VARIANTS, NoGuidance

TARGETS_PER_USER = 2


@dataclass(frozen=True)
class EvalSettings:
    """What a result depends on; a resumed run must use the same."""

    degree: float = DEGREE
    ratio: float = RATIO
    k: int = K
    coreset_seed: int = SEED
    variants: tuple[str, ...] = VARIANTS
    images: bool = True  # CLIP score (generates images); False: Text align only
    steps: int = 50
    guidance: float | None = None
    size: int | None = None
    seed: int = 0
    shuffle_seed: int = 0  # the "shuffled" control's seed


def split_targets(history: History) -> tuple[list[str], History]:
    """(the two most recent prompts, newest first; the rest of the history in file order)."""
    targets = history.most_recent(TARGETS_PER_USER)
    rest = [i for i in range(len(history)) if i not in set(targets)]
    return [history.prompts[i] for i in targets], history.subset(rest)


class Evaluator:
    """Scores users' histories on one diffusers pipeline for every variant."""

    def __init__(
        self,
        pipe,
        settings: EvalSettings,
        adapters: Mapping[str, PeCA] | str | os.PathLike | None = None,
        scorer: ClipScorer | None = None,
        image_folder: str | None = None,
    ):
        from ..diffusers_pipelines import PipelinePersonalizer

        unknown = set(settings.variants) - set(VARIANTS)
        if unknown or "base" not in settings.variants:
            raise ValueError(f"variants must include 'base' and come from {', '.join(VARIANTS)}; got {list(settings.variants)}")
        if settings.images and scorer is None:
            raise ValueError("CLIP score needs an evaluation CLIP model (scorer); use images=False for Text align only")
        self.pipe = pipe
        self.settings = settings
        self.scorer = scorer
        self.image_folder = image_folder
        self.cache = EmbeddingCache()
        self.guided = PipelinePersonalizer(pipe, adapters, self.cache)
        plain = {name: NoGuidance(adapter) for name, adapter in self.guided.personalizer.adapters.items()}
        self.unguided = PipelinePersonalizer(pipe, plain, self.cache)

    def pooled_features(self, prompts: Sequence[str]) -> torch.Tensor:
        """[N, P] plain pooled vectors as the family assembles them (what Text align compares to)."""
        return text_align_features(self.guided.personalizer, prompts)

    def _session(self, variant: str, history: History, other: History | None = None):
        """The personalizer of `variant` with the user's history (`other`: the other user's, for "other_user") set;
        returns (session, references)."""
        s = self.settings
        if variant == "base":
            session, picked = self.guided, History([], source=history.source)
        elif variant == "no_guidance":
            session, picked = self.unguided, history
        elif variant == "other_user":
            session, picked = self.guided, other
        elif variant == "shuffled":
            session, picked = self.guided, shuffled_history(history, s.shuffle_seed)
        else:
            session, picked = self.guided, history
        profile = session.set_history(picked, ratio=1.0 if variant == "no_sampling" else s.ratio, k=s.k, seed=s.coreset_seed)
        return session, len(profile.indices)

    def evaluate(self, user: str, history: History, other: tuple[str, History] | None = None) -> dict:
        """One user's record: per variant the mean scores over the targets, and the references used.

        `other` = (id, history) of the user whose history (without its own targets) is the "other_user" control;
        without one (a data set of one user) that row is left out of the record."""
        if len(history) <= TARGETS_PER_USER:
            return {"user": user, "skipped": f"{len(history)} records; needs more than {TARGETS_PER_USER}"}
        s = self.settings
        targets, rest = split_targets(history)
        if sum(rest.intensities) <= 0:
            return {"user": user, "skipped": "every history intensity is 0"}
        text_targets, text_history = self.pooled_features(targets), self.pooled_features(rest.prompts)
        clip_targets = clip_history = None
        if s.images:
            clip_targets, clip_history = self.scorer.text_features(targets), self.scorer.text_features(rest.prompts)
        record = {"user": user, "history": len(rest), "targets": targets, "references": {}, "scores": {}}
        other_rest = None
        if other is not None and "other_user" in s.variants:
            record["other_user"] = other[0]
            other_rest = split_targets(other[1])[1] if len(other[1]) > TARGETS_PER_USER else other[1]
        for variant in s.variants:
            if variant == "other_user" and not other_rest:
                continue
            session, references = self._session(variant, rest, other_rest)
            record["references"][variant] = references
            totals = dict.fromkeys(SCORES if s.images else SCORES[2:], 0.0)
            for t, target in enumerate(targets):
                pooled = session.personalizer.condition(target, s.degree).pooled[0]
                text = target_history_scores(pooled, text_targets[t], text_history, rest.intensities)
                totals["text_target"] += text[0] / len(targets)
                totals["text_history"] += text[1] / len(targets)
                if s.images:
                    image = self.generate(session, target, s.degree)
                    if self.image_folder:
                        folder = Path(self.image_folder, _safe(user))
                        folder.mkdir(parents=True, exist_ok=True)
                        image.save(folder / f"{variant}-target{t + 1}.png")
                    clip = target_history_scores(self.scorer.image_features([image])[0], clip_targets[t], clip_history, rest.intensities)
                    totals["clip_target"] += clip[0] / len(targets)
                    totals["clip_history"] += clip[1] / len(targets)
            record["scores"][variant] = totals
        return record

    def generate(self, session, target: str, degree: float):
        """One image of `target` under `session`'s condition (the same noise seed for every variant)."""
        s = self.settings
        extra = {"num_inference_steps": s.steps, "generator": torch.Generator(session.device).manual_seed(s.seed)}
        if s.guidance is not None:
            extra["guidance_scale"] = s.guidance
        if s.size is not None:
            extra["height"] = extra["width"] = s.size
        return self.pipe(**session.kwargs(target, degree), **extra).images[0]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "user"
