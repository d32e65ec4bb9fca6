"""The paper's evaluation (section 5; method.md §7): CLIP score and Text align per method variant.

Every user's two most recent records are the targets (History.most_recent(2)); the rest is
the history. For a vector e and prompts r_i with intensities p_i (equation 3):

    sim(e, r_i, p_i) = 100 * cos(e, r_i) * p_i
    target  = sim(e, r_target, 1)
    history = sum_i sim(e, r_i, p_i) / sum_i p_i        (all p_i = 1: the plain mean)

CLIP score: e = the generated image's CLIP image embedding, r = CLIP text embeddings (the
evaluation CLIP, --clip-model). Text align: e = the condition's pooled vector, r = the same
model's plain pooled vectors of the prompts (the family's pooled encoders, e.g. CLIP-L for SD1,
bigG for SDXL; the paper reports it for OpenCLIP encoders). Scores are averaged over a user's
targets, then over users. Imp % = 100 * (history - history of the base model) / history of
the base model.

Variants (rows of the table, as in the paper's Tables 2/3):

    base         the model's own condition (no personalization)
    drum         coreset-sampled references (--ratio), guidance with --alpha
    no_sampling  every history prompt a reference, guidance with --alpha
    no_guidance  coreset references, guidance off: each PeCA block attends with ONE softmax
                 over the concatenated context [target | ref_1 | ... | ref_R] (ordinary
                 cross-attention; alpha and p_i play no part, the target's share is whatever
                 the scores give it, about 1 / (1 + R))

Results are appended per user to <out>/results.jsonl, so an interrupted run resumes (users
already there are skipped); the table goes to stdout, <out>/summary.csv, summary.json, table.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .atomic import atomic_path
from .cache import EmbeddingCache
from .history import History, load_history, load_movielens
from .peca import PeCA, ReferenceState

VARIANTS = ("base", "drum", "no_sampling", "no_guidance")
LABELS = {"base": "base model", "drum": "DrUM", "no_sampling": "DrUM, no sampling", "no_guidance": "DrUM, no guidance"}
TARGETS_PER_USER = 2
SCORES = ("clip_target", "clip_history", "text_target", "text_history")


# ---------------------------------------------------------------------------------- metrics
def target_history_scores(
    e: torch.Tensor, target: torch.Tensor, history: torch.Tensor, weights: Sequence[float] | torch.Tensor
) -> tuple[float, float]:
    """(target, history) of equation 3: e [D], target [D], history [N, D], weights [N] = p_i."""
    p = torch.as_tensor(weights, dtype=torch.float64)
    if p.numel() != history.shape[0] or float(p.sum()) <= 0:
        raise ValueError(f"history of {history.shape[0]} prompts needs as many intensities with a positive sum, got {p.tolist()}")
    e = e.double().reshape(1, -1)
    target_score = 100 * F.cosine_similarity(e, target.double().reshape(1, -1)).item()
    history_score = float((100 * F.cosine_similarity(e, history.double()) * p).sum() / p.sum())
    return target_score, history_score


# ---------------------------------------------------------------------------------- the "no guidance" ablation
class NoGuidance(nn.Module):
    """The adapter with guidance off (PeCA.forward(..., guidance=False)): one softmax over
    [target | ref_1 | ... | ref_R] in every block; alpha and the intensities are ignored."""

    def __init__(self, adapter: PeCA):
        super().__init__()
        self.adapter = adapter
        self.config = adapter.config
        self.source = f"{getattr(adapter, 'source', adapter.config.name)} (no guidance)"

    @property
    def base_query(self) -> torch.Tensor:
        return self.adapter.base_query

    def encode_references(self, references: torch.Tensor) -> ReferenceState:
        return self.adapter.encode_references(references)

    def forward(self, query, target, references=None, weights=None, alpha=0.3):
        """As PeCA.forward, without guidance."""
        return self.adapter(query, target, references, weights, alpha, guidance=False)


# ---------------------------------------------------------------------------------- CLIP score
class ClipScorer:
    """Image and text embeddings of an evaluation CLIP (transformers CLIPModel)."""

    def __init__(self, model, tokenizer, image_processor, device: torch.device | str = "cpu"):
        self.model = model.eval().to(device)
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.device = torch.device(device)

    @classmethod
    def from_pretrained(cls, name: str, device: torch.device | str = "cpu") -> ClipScorer:
        from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

        return cls(CLIPModel.from_pretrained(name), AutoTokenizer.from_pretrained(name), CLIPImageProcessor.from_pretrained(name), device)

    @torch.no_grad()
    def image_features(self, images: Sequence) -> torch.Tensor:
        """PIL images -> [N, P] float32."""
        pixels = self.image_processor(images=list(images), return_tensors="pt").pixel_values.to(self.device, self.model.dtype)
        return _embeds(self.model.get_image_features(pixel_values=pixels)).float().cpu()

    @torch.no_grad()
    def text_features(self, prompts: Sequence[str]) -> torch.Tensor:
        """Prompts (cut to the model's context) -> [N, P] float32."""
        length = self.model.config.text_config.max_position_embeddings
        ids = self.tokenizer(list(prompts), padding="max_length", max_length=length, truncation=True, return_tensors="pt").input_ids
        return _embeds(self.model.get_text_features(input_ids=ids.to(self.device))).float().cpu()


def _embeds(output) -> torch.Tensor:
    """get_*_features returns a tensor (transformers 4) or an output with pooler_output (5)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def tiny_clip_scorer(seed: int = 0) -> ClipScorer:
    """A random 32-wide CLIPModel for 32x32 images (tests, --tiny-random): every score is noise."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from . import tiny

    tokenizer = tiny.clip_tokenizer()
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         max_position_embeddings=77, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
                         pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=tiny.IMAGE_SIZE, patch_size=8),
        projection_dim=16,
    )  # fmt: skip
    torch.manual_seed(seed)
    processor = CLIPImageProcessor(size={"shortest_edge": tiny.IMAGE_SIZE}, crop_size={"height": tiny.IMAGE_SIZE, "width": tiny.IMAGE_SIZE})
    return ClipScorer(CLIPModel(config), tokenizer, processor)


# ---------------------------------------------------------------------------------- one user
@dataclass(frozen=True)
class EvalSettings:
    """What a result depends on; a resumed run must use the same."""

    alpha: float = 0.3
    ratio: float = 0.1
    k: int = 10
    coreset_seed: int = 42
    variants: tuple[str, ...] = VARIANTS
    images: bool = True  # CLIP score (generates images); False: Text align only
    steps: int = 50
    guidance: float | None = None
    size: int | None = None
    seed: int = 0


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
        from .diffusers_pipelines import PipelinePersonalizer

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
        personalizer = self.guided.personalizer
        parts = [self.cache.pooled_features(personalizer.encoders[name], list(prompts)) for name in personalizer.spec.pooled_encoders]
        return torch.cat([p.float() for p in parts], -1)

    def _session(self, variant: str, history: History):
        """The personalizer of `variant` with the user's history set; returns (session, references)."""
        s = self.settings
        if variant == "base":
            session, picked = self.guided, History([], source=history.source)
        elif variant == "no_guidance":
            session, picked = self.unguided, history
        else:
            session, picked = self.guided, history
        profile = session.set_history(picked, ratio=1.0 if variant == "no_sampling" else s.ratio, k=s.k, seed=s.coreset_seed)
        return session, len(profile.indices)

    def evaluate(self, user: str, history: History) -> dict:
        """One user's record: per variant the mean scores over the targets, and the references used."""
        if len(history) <= TARGETS_PER_USER:
            return {"user": user, "skipped": f"{len(history)} records; needs more than {TARGETS_PER_USER}"}
        s = self.settings
        targets, rest = split_targets(history)
        if sum(rest.weights) <= 0:
            return {"user": user, "skipped": "every history intensity is 0"}
        text_targets, text_history = self.pooled_features(targets), self.pooled_features(rest.prompts)
        clip_targets = clip_history = None
        if s.images:
            clip_targets, clip_history = self.scorer.text_features(targets), self.scorer.text_features(rest.prompts)
        record = {"user": user, "history": len(rest), "targets": targets, "references": {}, "scores": {}}
        for variant in s.variants:
            session, references = self._session(variant, rest)
            record["references"][variant] = references
            totals = dict.fromkeys(SCORES if s.images else SCORES[2:], 0.0)
            for t, target in enumerate(targets):
                pooled = session.personalizer.condition(target, s.alpha).pooled[0]
                text = target_history_scores(pooled, text_targets[t], text_history, rest.weights)
                totals["text_target"] += text[0] / len(targets)
                totals["text_history"] += text[1] / len(targets)
                if s.images:
                    image = self.generate(session, target, s.alpha)
                    if self.image_folder:
                        folder = Path(self.image_folder, _safe(user))
                        folder.mkdir(parents=True, exist_ok=True)
                        image.save(folder / f"{variant}-target{t + 1}.png")
                    clip = target_history_scores(self.scorer.image_features([image])[0], clip_targets[t], clip_history, rest.weights)
                    totals["clip_target"] += clip[0] / len(targets)
                    totals["clip_history"] += clip[1] / len(targets)
            record["scores"][variant] = totals
        return record

    def generate(self, session, target: str, alpha: float):
        """One image of `target` under `session`'s condition (the same noise seed for every variant)."""
        s = self.settings
        extra = {"num_inference_steps": s.steps, "generator": torch.Generator(session.device).manual_seed(s.seed)}
        if s.guidance is not None:
            extra["guidance_scale"] = s.guidance
        if s.size is not None:
            extra["height"] = extra["width"] = s.size
        return self.pipe(**session.kwargs(target, alpha), **extra).images[0]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "user"


# ---------------------------------------------------------------------------------- runs and tables
class ResultLog:
    """<out>/results.jsonl: a settings line, then one line per user (appended, flushed, fsynced)."""

    def __init__(self, path: str | os.PathLike, settings: EvalSettings):
        self.path = Path(path)
        wanted = _settings_json(settings)
        self.records: dict[str, dict] = {}
        if self.path.is_file():
            lines = self.path.read_text(encoding="utf-8").splitlines()
            found = json.loads(lines[0]).get("settings") if lines else None
            if lines and found != wanted:
                raise SystemExit(f"{self.path} was made with other settings ({found}); use another --out or the same flags")
            for number, line in enumerate(lines[1:], 2):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    if number == len(lines):  # the last line of an interrupted write: redo that user
                        break
                    raise SystemExit(f"{self.path} line {number}: broken JSON; fix or delete the file") from None
                self.records[str(record["user"])] = record
            self._rewrite(wanted)  # drops a torn last line
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._rewrite(wanted)

    def _rewrite(self, settings: dict) -> None:
        with atomic_path(self.path) as temporary, open(temporary, "w", encoding="utf-8") as f:
            f.write(json.dumps({"settings": settings}) + "\n")
            for record in self.records.values():
                f.write(json.dumps(record, ensure_ascii=False) + "\n")

    def append(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records[str(record["user"])] = record


def _settings_json(settings: EvalSettings) -> dict:
    return json.loads(json.dumps(asdict(settings)))


def summarize(records: Iterable[dict], variants: Sequence[str]) -> list[dict]:
    """One row per variant: users, mean scores over users, Imp % of the history scores over the base model."""
    scored = [r for r in records if "scores" in r]
    rows = []
    for variant in variants:
        row = {"variant": variant, "method": LABELS[variant], "users": len(scored)}
        for score in SCORES:
            values = [r["scores"][variant][score] for r in scored if score in r["scores"].get(variant, {})]
            row[score] = sum(values) / len(values) if values else math.nan
        rows.append(row)
    base = rows[0]
    for row in rows:
        for kind in ("clip", "text"):
            reference = base[f"{kind}_history"]
            row[f"{kind}_imp"] = 100 * (row[f"{kind}_history"] - reference) / reference if row is not base and reference else math.nan
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """The paper's Table 2/3 shape as markdown: rows = methods; target, history, Imp % per metric."""

    def cell(value: float, signed: bool = False) -> str:
        if value is None or math.isnan(value):
            return "—"
        return f"{value:+.2f}" if signed else f"{value:.2f}"

    lines = [
        "| method | CLIP score: target | history | Imp % | Text align: target | history | Imp % |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        clip = (cell(r["clip_target"]), cell(r["clip_history"]), cell(r["clip_imp"], True))
        text = (cell(r["text_target"]), cell(r["text_history"]), cell(r["text_imp"], True))
        lines.append(f"| {r['method']} | {' | '.join(clip)} | {' | '.join(text)} |")
    return "\n".join(lines) + f"\n\n{rows[0]['users'] if rows else 0} users"


def write_summary(out: str | os.PathLike, rows: Sequence[dict]) -> str:
    """summary.csv, summary.json and table.md in `out`; returns the table."""
    out = Path(out)
    fields = ["variant", "method", "users", *SCORES, "clip_imp", "text_imp"]
    with open(out / "summary.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows([{k: r[k] for k in fields} for r in rows])
    clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows]
    (out / "summary.json").write_text(json.dumps(clean, indent=1), encoding="utf-8")
    table = format_table(rows)
    (out / "table.md").write_text(table + "\n", encoding="utf-8")
    return table


def run_evaluation(evaluator: Evaluator, users: Mapping[str, History], out: str | os.PathLike, progress: bool = True) -> list[dict]:
    """Evaluate every user not yet in <out>/results.jsonl, then write the summary; returns its rows."""
    from tqdm import tqdm

    log = ResultLog(Path(out, "results.jsonl"), evaluator.settings)
    todo = [user for user in users if user not in log.records]
    bar = tqdm(todo, desc="users", unit="user", disable=not progress, dynamic_ncols=True)
    for user in bar:
        log.append(evaluator.evaluate(user, users[user]))
    bar.close()
    return summarize(log.records.values(), evaluator.settings.variants)


def pip_users(path: str | os.PathLike) -> dict[str, History]:
    """PIP per-user JSONL files (user id = file name without .jsonl): a folder of them or one file."""
    path = Path(path)
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    if not files:
        raise SystemExit(f"{path}: no .jsonl files (PIP keeps one JSONL file per user)")
    return {f.stem: load_history(f) for f in files}


def movielens_users(folder: str | os.PathLike) -> dict[str, History]:
    """MovieLens latest-small: one history per userId."""
    return {str(user): history for user, history in sorted(load_movielens(folder).items())}


# ---------------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drum eval", description="CLIP score and Text align of DrUM and its ablations (the paper's Tables 2/3)."
    )
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--pip", help="PIP: folder of per-user .jsonl files (or one file)")
    data.add_argument("--movielens", help="MovieLens latest-small folder (ratings.csv, movies.csv)")
    parser.add_argument("--model", help="diffusers pipeline folder or hub id")
    parser.add_argument(
        "--tiny-random", action="store_true", help="tiny random pipeline, adapters and CLIP (checks the install; scores are noise)"
    )
    parser.add_argument(
        "--family", default="sd1", choices=["sd1", "sd2", "sdxl", "sd3", "flux"], help="family of the --tiny-random pipeline"
    )
    parser.add_argument("--adapters", help="folder with L/H/bigG/T5.safetensors (default: the usual search, then the hub)")
    parser.add_argument("--clip-model", default="openai/clip-vit-large-patch14", help="CLIP for the CLIP score (transformers id/folder)")
    parser.add_argument("--out", required=True, help="folder: results.jsonl (resumable), summary.csv/json, table.md")
    parser.add_argument("--users", type=int, help="evaluate only the first N users (sorted ids)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--alpha", type=float, help="personalization degree (default 0.3 on PIP, 0.1 on MovieLens, as the paper)")
    parser.add_argument("--ratio", type=float, default=0.1, help="coreset share of the history")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--coreset-seed", type=int, default=42)
    parser.add_argument("--no-images", action="store_true", help="Text align only (no generation, no CLIP score)")
    parser.add_argument("--save-images", action="store_true", help="keep the generated images in <out>/images/<user>/")
    parser.add_argument("--steps", type=int, help="denoising steps (default 50; 2 with --tiny-random)")
    parser.add_argument("--guidance", type=float, help="guidance scale (default: the pipeline's)")
    parser.add_argument("--size", type=int, help="image height and width (default: the model's)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (the same for every variant)")
    parser.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda if available)")
    parser.add_argument(
        "--dtype", choices=["float32", "float16", "bfloat16"], help="pipeline precision (default float16 on GPU, float32 on CPU)"
    )
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    """`drum eval ...`: 0 done, 130 interrupted (results so far are kept; re-run to go on)."""
    args = build_parser().parse_args(argv)
    if not args.tiny_random and not args.model:
        raise SystemExit("drum eval: --model (or --tiny-random) is required")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    users = pip_users(args.pip) if args.pip else movielens_users(args.movielens)
    if args.users is not None:
        users = dict(list(users.items())[: args.users])
    settings = EvalSettings(
        alpha=args.alpha if args.alpha is not None else (0.3 if args.pip else 0.1),
        ratio=args.ratio,
        k=args.k,
        coreset_seed=args.coreset_seed,
        variants=tuple(dict.fromkeys(["base", *args.variants])),
        images=not args.no_images,
        steps=args.steps or (2 if args.tiny_random else 50),
        guidance=args.guidance,
        size=args.size,
        seed=args.seed,
    )
    pipe, adapters, scorer = _load(args, device, settings.images)
    pipe.set_progress_bar_config(disable=True)  # one bar, over users
    image_folder = os.path.join(args.out, "images") if args.save_images else None
    try:
        rows = run_evaluation(Evaluator(pipe, settings, adapters, scorer, image_folder), users, args.out, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"\ninterrupted; results so far are in {args.out}/results.jsonl: run the same command to go on", file=sys.stderr)
        return 130
    print(write_summary(args.out, rows))
    return 0


def _load(args: argparse.Namespace, device: torch.device, images: bool):
    """(pipeline, adapters, CLIP scorer or None) for the flags."""
    if args.tiny_random:
        from . import tiny

        return tiny.pipeline(args.family), tiny.adapters(args.family), tiny_clip_scorer() if images else None
    from diffusers import DiffusionPipeline

    dtype = getattr(torch, args.dtype) if args.dtype else (torch.float16 if device.type == "cuda" else torch.float32)
    pipe = DiffusionPipeline.from_pretrained(args.model, torch_dtype=dtype).to(device)
    scorer = ClipScorer.from_pretrained(args.clip_model, device) if images else None
    return pipe, args.adapters, scorer


if __name__ == "__main__":
    raise SystemExit(main())
