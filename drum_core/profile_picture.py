"""A user's profile at a glance: the history on a 2-D PCA map, the coreset highlighted (PIL only).

    render_profile(embeddings [N, D], picks, prompts, intensities, size, degrees) -> PIL.Image (RGB)

Left: every history prompt as a grey dot (area grows with its intensity p_i), the picks as
numbered orange dots in pick order (a number is left off where it would cover another one). Right:
the picked prompts, in pick order, with their weight p_i, as many as fit and "+N more" for the rest.
The words are a reader's, not a researcher's: what is near, what is big, what is picked.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (250, 250, 247)
HISTORY_DOT = (165, 165, 165)
PICK_DOT = (230, 110, 20)
TEXT = (30, 30, 30)
MUTED = (110, 110, 110)
MAX_LISTED = 20


def project_2d(embeddings: torch.Tensor) -> torch.Tensor:
    """[N, D] -> [N, 2]: the first two principal components of the L2-normalised rows (zeros if N < 2)."""
    if embeddings.dim() != 2 or embeddings.shape[0] == 0:
        raise ValueError(f"profile embeddings must be a non-empty [N, D] matrix, got {list(embeddings.shape)}")
    x = torch.nn.functional.normalize(embeddings.double(), dim=1)
    x = x - x.mean(0, keepdim=True)
    if x.shape[0] < 2:
        return torch.zeros(x.shape[0], 2, dtype=torch.float64)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    coords = x @ v[:2].T
    if coords.shape[1] < 2:
        coords = torch.nn.functional.pad(coords, (0, 2 - coords.shape[1]))
    return coords


def _font(size: int):
    """PIL's default font at `size` pixels (Pillow >= 10.1), else its fixed-size bitmap font."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def _fit(text: str, font, width: int, draw: ImageDraw.ImageDraw) -> str:
    """`text` cut with an ellipsis to fit `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def degree_text(degrees: Sequence[float]) -> str:
    """ "degree 0.3" or "degrees 0, 0.3, 0.6": the degree alpha (alpha(s) the conditioner applies) in words."""
    return f"degree{'s' if len(degrees) > 1 else ''} {', '.join(f'{d:g}' for d in degrees)}"


def legend(
    n: int, picks: Sequence[int], prompts: Sequence[str], intensities: Sequence[float], rows: int, degrees: Sequence[float] | None = None
) -> list[str]:
    """The text beside the map: two heading lines (the first opens with the degree alpha when `degrees` is given:
    "Taste at degree 0.3 · ..."), then the picks in pick order, at most `rows` lines in all; when picks are left off,
    the last line says "+N more"."""
    lines = [
        (f"Taste at {degree_text(degrees)} · " if degrees else "")
        + f"{n} prompts (grey), {len(picks)} picked (orange, numbered in pick order)",
        "Close dots: similar prompts. Bigger dots: more weight.",
    ]
    room = max(0, rows - len(lines))
    listed = list(picks)[: min(MAX_LISTED, room)]
    if len(listed) < len(picks) and listed:
        listed = listed[: max(0, min(len(listed), room - 1))]  # one row for "+N more"
    lines += [f"{rank:>2}. weight {intensities[i]:g}: {prompts[i]}" for rank, i in enumerate(listed, 1)]
    if len(listed) < len(picks):
        lines.append(f"+{len(picks) - len(listed)} more")
    return lines


def place_labels(anchors: Sequence[tuple[float, float]], size: tuple[float, float]) -> list[tuple[float, float] | None]:
    """Top-left corners for labels of `size` beside each anchor (right above, right below, left above, left below), the
    first that overlaps no label placed before; None where every side is taken."""
    width, height = size
    placed: list[tuple[float, float]] = []
    corners: list[tuple[float, float] | None] = []
    for x, y in anchors:
        corner = None
        for dx, dy in ((6, -height - 2), (6, 2), (-width - 6, -height - 2), (-width - 6, 2)):
            left, top = x + dx, y + dy
            if all(left >= a + width or a >= left + width or top >= b + height or b >= top + height for a, b in placed):
                corner = (left, top)
                placed.append(corner)
                break
        corners.append(corner)
    return corners


def render_profile(
    embeddings: torch.Tensor,
    picks: Sequence[int],
    prompts: Sequence[str],
    intensities: Sequence[float] | None = None,
    size: tuple[int, int] = (1024, 512),
    degrees: Sequence[float] | None = None,
) -> Image.Image:
    """The profile picture (RGB, `size` = (width, height)); `degrees`: the degree(s) alpha the taste goes in at, named
    in the legend's first line (legend)."""
    n = embeddings.shape[0]
    if len(prompts) != n:
        raise ValueError(f"{len(prompts)} prompts for {n} embeddings")
    intensities = [1.0] * n if intensities is None else list(intensities)
    if len(intensities) != n:
        raise ValueError(f"{len(intensities)} intensities for {n} embeddings")
    bad = [i for i in picks if not 0 <= i < n]
    if bad:
        raise ValueError(f"picked indices {bad[:5]} out of range for {n} prompts")
    width, height = size
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = _font(max(12, height // 30))
    margin = max(16, height // 20)
    map_size = min(height - 2 * margin, width // 2 - margin)
    inset = map_size // 10  # keeps the outermost dots and their labels inside the frame
    coords = project_2d(embeddings)
    low, high = coords.min(0).values, coords.max(0).values
    span = torch.where(high - low > 0, high - low, torch.ones_like(high))
    xy = ((coords - low) / span * (map_size - 2 * inset) + margin + inset).tolist()
    top = max(intensities) or 1.0

    def dot(i: int, color, scale: float) -> None:
        radius = scale * (2.0 + 3.0 * intensities[i] / top) * height / 320
        x, y = xy[i][0], height - xy[i][1]
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=color)

    draw.rectangle((margin, height - margin - map_size, margin + map_size, height - margin), outline=MUTED)
    picked = set(picks)
    for i in range(n):
        if i not in picked:
            dot(i, HISTORY_DOT, 1.0)
    for i in picks:
        dot(i, PICK_DOT, 1.6)
    label_size = (draw.textlength(str(max(len(picks), 1)), font=font) + 4, getattr(font, "size", 12) + 4)
    anchors = [(xy[i][0], height - xy[i][1]) for i in picks]
    for rank, corner in enumerate(place_labels(anchors, label_size), 1):
        if corner is not None:
            draw.text(corner, str(rank), fill=TEXT, font=font, stroke_width=2, stroke_fill=BACKGROUND)
    left = 2 * margin + map_size
    line = round(font.size * 1.5) if hasattr(font, "size") else 18
    for row, text in enumerate(legend(n, picks, prompts, intensities, rows=(height - 2 * margin) // line - 1, degrees=degrees)):
        colour = MUTED if row == 1 or text.startswith("+") else TEXT
        draw.text((left, margin + line * (row + (row >= 2))), _fit(text, font, width - left - margin, draw), fill=colour, font=font)
    return image
