"""Does it learn my taste? The paper's Text align on held-out prompts, against a control (docs/evaluation.md).

    report = taste_check(personalizer, history, degrees, control=None, settings=TasteSettings())

1. Hold out the user's `held_out` newest prompts (History.most_recent; default 10 % of the history,
   at least 2, at most 20); the profile is the coreset of the rest (docs/method.md §4).
2. The control's profile: the coreset of `control` (another person's whole history) or, when there
   is none, of `shuffled_history(rest, seed)`: every prompt's characters permuted (spaces kept), so
   the control has the user's count of prompts, lengths, letters and intensities but no words.
3. For every degree d (degree 0 is always computed: the reference) and held-out prompt t, with e the
   pooled vector of t's personalized condition and f the family's plain pooled features (equation 3):

       target(d)  = 100 * cos(e, f_t)
       history(d) = sum_{i != t} 100 * cos(e, f_i) * p_i / sum_{i != t} p_i   (the OTHER held-out prompts)

   averaged over the held-out prompts (those whose other held-out intensities sum to more than 0).
   History leaves t out, else it would rise with the target score alone.
4. Per degree: target loss % = 100 * (target_user(0) - target_user(d)) / |target_user(0)|; gain =
   history(d) - history(0) for the user's profile and for the control's; edge = user gain - control
   gain (at degree 0 the adapter ignores the references, so both profiles give the same condition).
   The recommended degree has the largest edge among the degrees whose target loss is at most
   `max_target_loss` (a fraction: 0.05 = 5 %); ties go to the lower degree. When no such degree has
   an edge above `min_edge` (0.1 score points) the history does not beat the control: the
   recommendation is 0 (no personalization).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from PIL import Image, ImageDraw

from .defaults import RATIO, SEED, K
from .history import History
from .personalizer import Personalizer, first_clip

HELD_OUT_SHARE = 0.10
HELD_OUT_MAX = 20
HELD_OUT_MIN = 2  # History leaves the scored prompt out: it needs another held-out prompt
SCALE = 100.0

Progress = Callable[[int, int], None]  # (done, total) over the conditions computed


@dataclass(frozen=True)
class TasteSettings:
    """What a taste check depends on. `held_out` 0 = the default share (10 %, 2 to 20 prompts)."""

    held_out: int = 0
    max_target_loss: float = 0.05
    ratio: float = RATIO
    max_count: int = 0
    k: int = K
    coreset_seed: int = SEED
    diverse: bool = False
    shuffle_seed: int = 0
    min_edge: float = 0.1  # score points (100 * cos): a smaller edge over the control is noise, not taste

    def __post_init__(self) -> None:
        if self.held_out < 0:
            raise ValueError(f"held_out must be >= 0 (0 = 10 % of the history, {HELD_OUT_MIN} to {HELD_OUT_MAX}), got {self.held_out}")
        if not (math.isfinite(self.min_edge) and self.min_edge >= 0):
            raise ValueError(f"min_edge must be a finite number of score points >= 0, got {self.min_edge}")
        if not (math.isfinite(self.max_target_loss) and self.max_target_loss >= 0):
            raise ValueError(f"max_target_loss must be a finite fraction >= 0 (0.05 = 5 %), got {self.max_target_loss}")


@dataclass(frozen=True)
class TasteRow:
    """One degree of the sweep (scores are means over the held-out prompts)."""

    degree: float
    target: float  # user's profile
    history: float
    control_target: float
    control_history: float
    target_loss: float  # % of target at degree 0
    gain: float  # history - history at degree 0
    control_gain: float
    edge: float  # gain - control_gain
    allowed: bool  # target_loss <= max_target_loss


@dataclass
class TasteReport:
    rows: list[TasteRow]
    recommended: float
    held_out: list[str]  # newest first
    scored: int  # held-out prompts scored (the others' intensities sum to more than 0)
    references: int  # the user's profile size
    control_references: int
    control: str  # what the control was
    max_target_loss: float
    min_edge: float
    family: str = ""
    settings: dict = field(default_factory=dict)

    @property
    def best(self) -> TasteRow | None:
        """The row of the recommended degree when it beats the control, else None."""
        return next((r for r in self.rows if r.degree == self.recommended and r.edge > self.min_edge and r.allowed), None)

    def verdict(self) -> str:
        best = self.best
        if best is None:
            return (
                f"no degree with a target loss <= {100 * self.max_target_loss:g} % moves the conditions closer to your held-out "
                f"prompts than the control ({self.control}) does by more than {self.min_edge:g} points: recommended degree 0"
            )
        return (
            f"recommended degree {best.degree:g}: your history's gain {best.gain:+.2f} vs the control's {best.control_gain:+.2f} "
            f"(edge {best.edge:+.2f}) at a target loss of {best.target_loss:.1f} %"
        )

    def table(self) -> str:
        """The per-degree table as markdown, then the verdict."""
        lines = [
            f"held out: {len(self.held_out)} newest prompts ({self.scored} scored); profile: {self.references} references; "
            f"control: {self.control} ({self.control_references} references)",
            "",
            "| degree | target | history | control target | control history | target loss % | gain | control gain | edge |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in self.rows:
            mark = " *" if r.degree == self.recommended else ("" if r.allowed else " (loss)")
            lines.append(
                f"| {r.degree:g}{mark} | {r.target:.2f} | {r.history:.2f} | {r.control_target:.2f} | {r.control_history:.2f} | "
                f"{r.target_loss:.2f} | {r.gain:+.2f} | {r.control_gain:+.2f} | {r.edge:+.2f} |"
            )
        return "\n".join(lines) + "\n\n" + self.verdict()

    def as_dict(self) -> dict:
        return {
            "recommended": self.recommended,
            "verdict": self.verdict(),
            "held_out": self.held_out,
            "scored": self.scored,
            "references": self.references,
            "control": self.control,
            "control_references": self.control_references,
            "max_target_loss": self.max_target_loss,
            "min_edge": self.min_edge,
            "family": self.family,
            "settings": self.settings,
            "rows": [asdict(r) for r in self.rows],
            "best": None if self.best is None else asdict(self.best),  # the recommended row when it beats the control
        }


def unit_sweep(start: float, end: float, count: int, quantity: str = "degree") -> tuple[float, ...]:
    """`count` evenly spaced values from start to end in [0, 1], both included: the Degree Slider's sweep of the
    degree and the History Mix's sweep of the mix (`quantity` names which in errors)."""
    if count < 1:
        raise ValueError(f"a {quantity} sweep needs count >= 1, got {count}")
    for name, value in (("start", start), ("end", end)):
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise ValueError(f"{quantity} sweep {name} must lie in [0, 1], got {value}")
    if count == 1:
        return (start,)
    return tuple(round(start + (end - start) * i / (count - 1), 6) for i in range(count))


def held_out_count(total: int, held_out: int = 0) -> int:
    """How many newest prompts to hold out of `total`: `held_out`, or 10 % (2 to 20) when 0; at least one prompt stays."""
    count = held_out or min(HELD_OUT_MAX, max(HELD_OUT_MIN, round(HELD_OUT_SHARE * total)))
    if count < HELD_OUT_MIN or total - count < 1:
        raise ValueError(
            f"a taste check holds out {count} of {total} prompts: it needs at least {HELD_OUT_MIN} held out "
            f"and one left for the profile ({HELD_OUT_MIN + 1} prompts or more)"
        )
    return count


def split_newest(history: History, count: int) -> tuple[History, History]:
    """(the `count` most recent records, newest first; the rest in file order)."""
    newest = history.most_recent(count)
    chosen = set(newest)
    return history.subset(newest), history.subset(i for i in range(len(history)) if i not in chosen)


def shuffled_prompt(prompt: str, seed: int | str) -> str:
    """`prompt` with its non-space characters permuted (spaces stay where they are), deterministic for `seed`."""
    letters = [c for c in prompt if not c.isspace()]
    random.Random(f"drum-shuffle/{seed}").shuffle(letters)  # str seeds hash with SHA-512: the same on every run and machine
    picked = iter(letters)
    return "".join(c if c.isspace() else next(picked) for c in prompt)


def shuffled_history(history: History, seed: int = 0) -> History:
    """The control "shuffled history": every prompt's characters permuted (seeded by `seed` and the prompt's
    index), intensities and timestamps kept. Word lengths, letters and the number of prompts stay; the words,
    and with them the taste, are gone."""
    prompts = [shuffled_prompt(p, f"{seed}/{i}") for i, p in enumerate(history.prompts)]
    return History(
        prompts, history.intensities, history.timestamps, f"{history.source} (shuffled, seed {seed})", history.is_test, history.ratings
    )


def text_align_features(personalizer: Personalizer, prompts: Sequence[str]) -> torch.Tensor:
    """[N, P] plain pooled vectors of `prompts` as the family assembles them (cached): what Text align compares to."""
    parts = [personalizer.cache.pooled_features(personalizer.encoders[n], list(prompts)) for n in personalizer.spec.pooled_encoders]
    return torch.cat([p.float().cpu() for p in parts], -1)


def use_profile(
    personalizer: Personalizer, history: History, settings: TasteSettings, progress: Callable[[str, int, int], None] | None = None
) -> int:
    """Coreset-sample `history` on the first CLIP encoder's pooled features and make its picks the references; returns their count."""
    from .diffusers_pipelines import profile_history

    encoder = personalizer.encoders[first_clip(personalizer.encoders)]
    s = settings
    profile = profile_history(encoder, history, s.ratio, s.max_count, s.k, s.coreset_seed, personalizer.cache, progress, s.diverse)
    references = profile.references
    personalizer.set_history(references.prompts, references.intensities, features=profile.features[profile.picks])
    return len(profile.picks)


def text_align(e: torch.Tensor, features: torch.Tensor, intensities: Sequence[float], target: int) -> tuple[float, float] | None:
    """(target, history) for conditions' pooled rows e [D, P] against held-out features [H, P]: the history
    score over the held-out prompts other than `target`; None when their intensities sum to 0."""
    p = torch.tensor(intensities, dtype=torch.float64)
    p[target] = 0.0
    if float(p.sum()) <= 0:
        return None
    cos = SCALE * torch.nn.functional.cosine_similarity(e.double()[:, None, :], features.double()[None, :, :], dim=-1)  # [D, H]
    return cos[:, target], (cos * p).sum(1) / p.sum()


def taste_check(
    personalizer: Personalizer,
    history: History,
    degrees: Sequence[float],
    control: History | None = None,
    settings: TasteSettings | None = None,
    progress: Progress | None = None,
) -> TasteReport:
    """The taste check of `history` on `personalizer`'s encoders and adapters (see the module docstring).

    Leaves `personalizer` holding the control's references."""
    s = settings or TasteSettings()
    for d in degrees:
        if not (math.isfinite(d) and 0.0 <= d <= 1.0):
            raise ValueError(f"degrees must lie in [0, 1], got {d}")
    sweep = sorted({0.0, *(float(d) for d in degrees)})
    held, rest = split_newest(history, held_out_count(len(history), s.held_out))
    if control is not None and len(control) == 0:
        raise ValueError(f"the control history {control.source} is empty")
    control_history = control if control is not None else shuffled_history(rest, s.shuffle_seed)
    control_name = control.source if control is not None else f"your history shuffled (seed {s.shuffle_seed})"
    features = text_align_features(personalizer, held.prompts)
    scored = [t for t in range(len(held)) if sum(w for i, w in enumerate(held.intensities) if i != t) > 0]
    if not scored:
        raise ValueError(f"{history.source}: the held-out prompts' intensities sum to 0: nothing to compare to")
    total, done = 2 * len(scored), 0
    means, sizes = [], []
    for side in (rest, control_history):
        sizes.append(use_profile(personalizer, side, s))
        sums = torch.zeros(2, len(sweep), dtype=torch.float64)
        for t in scored:
            pooled = personalizer.condition(held.prompts[t], sweep).pooled
            if pooled is None:
                raise ValueError(f"the {personalizer.family} condition has no pooled vector: Text align cannot be measured")
            target, hist = text_align(pooled, features, held.intensities, t)
            sums += torch.stack([target, hist])
            done += 1
            if progress:
                progress(done, total)
        means.append((sums / len(scored)).tolist())
    (target_u, hist_u), (target_c, hist_c) = means
    rows = []
    for j, degree in enumerate(sweep):
        base = target_u[0]
        loss = 100.0 * (base - target_u[j]) / abs(base) if base else (0.0 if target_u[j] >= base else math.inf)
        gain, control_gain = hist_u[j] - hist_u[0], hist_c[j] - hist_c[0]
        allowed = loss <= 100.0 * s.max_target_loss + 1e-9
        rows.append(
            TasteRow(degree, target_u[j], hist_u[j], target_c[j], hist_c[j], loss, gain, control_gain, gain - control_gain, allowed)
        )
    return TasteReport(
        rows,
        recommend(rows, s.min_edge),
        list(held.prompts),
        len(scored),
        sizes[0],
        sizes[1],
        control_name,
        s.max_target_loss,
        s.min_edge,
        personalizer.family,
        asdict(s),
    )


def recommend(rows: Sequence[TasteRow], min_edge: float = 0.1) -> float:
    """The degree with the largest edge > min_edge among the allowed rows (ties: the lower degree); 0.0 when none."""
    best = None
    for row in sorted(rows, key=lambda r: r.degree):
        if row.allowed and row.edge > min_edge and (best is None or row.edge > best.edge):
            best = row
    return best.degree if best is not None else 0.0


USER_CURVE = (230, 110, 20)  # the profile picture's pick colour
CONTROL_CURVE = (90, 110, 160)


def render_taste(report: TasteReport, size: tuple[int, int] = (1024, 512)) -> Image.Image:
    """The taste check as a picture (RGB, size = (width, height)): History (y) against Target (x), one curve for the
    user's profile and one for the control's, every degree marked; the recommended one ringed; the verdict below."""
    from .profile_picture import BACKGROUND, MUTED, TEXT, _fit, _font

    width, height = size
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = _font(max(12, height // 32))
    line = round(font.size * 1.5) if hasattr(font, "size") else 18
    margin = max(16, height // 16)
    left, top, right, bottom = margin + 4 * line, margin + 2 * line, width - margin, height - margin - 3 * line
    xs = [v for r in report.rows for v in (r.target, r.control_target)]
    ys = [v for r in report.rows for v in (r.history, r.control_history)]

    def span(values: list[float]) -> tuple[float, float]:
        low, high = min(values), max(values)
        pad = (high - low) * 0.08 or 0.5
        return low - pad, high + pad

    (x0, x1), (y0, y1) = span(xs), span(ys)

    def at(x: float, y: float) -> tuple[float, float]:
        return left + (x - x0) / (x1 - x0) * (right - left), bottom - (y - y0) / (y1 - y0) * (bottom - top)

    draw.rectangle((left, top, right, bottom), outline=MUTED)
    for value, (px, _py) in ((x0, at(x0, y0)), (x1, at(x1, y0))):
        draw.text((px, bottom + 4), f"{value:.1f}", fill=MUTED, font=font, anchor="ma")
    for value in (y0, y1):
        draw.text((left - 6, at(x0, value)[1]), f"{value:.1f}", fill=MUTED, font=font, anchor="rm")
    draw.text(((left + right) / 2, bottom + 4 + line), "Target (similarity to the prompt)", fill=TEXT, font=font, anchor="ma")
    draw.text((margin, top - line), "History (similarity to your held-out prompts)", fill=TEXT, font=font)
    curves = (
        ("your history", USER_CURVE, [(r.target, r.history) for r in report.rows]),
        (f"control: {report.control}", CONTROL_CURVE, [(r.control_target, r.control_history) for r in report.rows]),
    )
    radius = max(3, height // 110)
    for number, (name, color, points) in enumerate(curves):
        pixels = [at(x, y) for x, y in points]
        draw.line(pixels, fill=color, width=max(2, height // 250))
        for row, (px, py) in zip(report.rows, pixels):
            draw.ellipse((px - radius, py - radius, px + radius, py + radius), fill=color)
            draw.text((px + radius + 2, py - radius - 2), f"{row.degree:g}", fill=color, font=font, anchor="ld")
            if number == 0 and report.best is not None and row.degree == report.recommended:
                ring = 3 * radius
                draw.ellipse((px - ring, py - ring, px + ring, py + ring), outline=TEXT, width=2)
        key_x = left + number * (right - left) // 2
        draw.line((key_x, margin + line // 2, key_x + 2 * line, margin + line // 2), fill=color, width=3)
        draw.text((key_x + 2 * line + 6, margin), _fit(name, font, (right - left) // 2 - 3 * line, draw), fill=TEXT, font=font)
    draw.text((margin, height - margin - line), _fit(report.verdict(), font, width - 2 * margin, draw), fill=TEXT, font=font)
    return image
