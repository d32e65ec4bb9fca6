"""Each template is shown by its title: the template browser titles a pack's card with the UI file's stem and nothing
else (docs/comfyui.md, Template browser), so the UI files and thumbnails are named by tests/support/workflows.py
TITLES (slug -> title), the one table of them, while the API copies keep the slugs."""

from support.workflows import (
    TEMPLATES,
    THUMBNAIL_SUFFIXES,
    TITLE_FORBIDDEN,
    TITLES,
    WORKFLOWS,
    api_path,
    template_title,
    thumbnail_paths,
    ui_path,
)


def test_every_ui_template_file_has_a_title_and_every_title_a_file():
    ui_files = sorted(path.stem for path in WORKFLOWS.glob("*.json"))
    assert ui_files == sorted(TITLES.values()), "example_workflows/*.json and TITLES' titles differ"
    assert sorted(path.stem for path in (WORKFLOWS / "api").glob("*.json")) == sorted(TITLES) == TEMPLATES
    for name in TEMPLATES:
        assert ui_path(name).is_file() and api_path(name).is_file(), name
        assert ui_path(name).stem == template_title(name) == TITLES[name]


def test_titles_are_ascii_without_characters_a_url_or_a_file_name_breaks_on():
    assert len(set(TITLES.values())) == len(TITLES), "two templates share a title"
    for name, title in TITLES.items():
        assert title.isascii() and title.isprintable() and title == title.strip() and title, (name, title)
        assert not set(title) & set(TITLE_FORBIDDEN), (name, title)
        assert not title.endswith("."), (name, title)  # Windows drops a trailing dot from a file name
    assert set('#?%/\\:*"<>|') <= set(TITLE_FORBIDDEN)


def test_every_thumbnail_is_named_by_its_template_title():
    thumbnails = sorted(path.stem for suffix in THUMBNAIL_SUFFIXES for path in WORKFLOWS.glob(f"*{suffix}"))
    assert thumbnails == sorted(TITLES.values()), "one thumbnail per template, named <title>.jpg (or .png, .webp)"
    assert all(thumbnail_paths(name) for name in TEMPLATES)
