"""Regenerate the template thumbnails (example_workflows/<title>.jpg, beside <title>.json: the template's title in
tests/support/workflows.py TITLES): each template's graph and sweep as diagrams, with the profile map of a real run
where the template makes one.

    .venv/bin/python tools/make_thumbnails.py [SLUG ...]   # after tools/bootstrap.sh; default: every template
                                                           # (SLUG: drum_sd15, ...: the keys of TITLES)

Runs the server tier's template test (tests/server/test_server_workflows.py): every template's
API copy goes through a real headless ComfyUI on the tests' tiny random models; the 512x512 thumbnail
(tests/support/workflows.py: thumbnail) draws the template's graph as labelled boxes left to right, what it
sweeps (Degree Slider, History Mix) as frames on a 0..1 axis, and the run's wide images (the profile map);
the generated pictures themselves, noise from random weights, are left out. The
thumbnail of each template that ran (written by the test as <title>.jpg) is copied beside it, replacing any older one
of any format;
a template whose run failed keeps its old thumbnail, and the exit status is the test run's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support.workflows import THUMBNAIL_SUFFIXES, TITLES, WORKFLOWS  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description="regenerate example_workflows/<title>.jpg from real runs of the templates")
    parser.add_argument("names", nargs="*", help="templates to redo, by slug (drum_sd15, ...; default: all)")
    names = parser.parse_args().names
    unknown = [name for name in names if name not in TITLES]
    if unknown:
        parser.error(f"not a template slug (tests/support/workflows.py TITLES): {', '.join(unknown)}")
    selection = "every_template_validates" + (f" and ({' or '.join(names)})" if names else "")
    with tempfile.TemporaryDirectory(prefix="drum-thumbnails-") as artifacts:
        test = "tests/server/test_server_workflows.py"
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-m", "server", test, "-k", selection]
        done = subprocess.run(command, cwd=ROOT, env={**os.environ, "DRUM_TEST_ARTIFACTS": artifacts})
        if done.returncode != 0:
            print("make_thumbnails: some template runs failed; their thumbnails were not replaced", file=sys.stderr)
        made = sorted((Path(artifacts) / "server" / "thumbnails").glob("*.jpg"))
        for thumbnail in made:
            for suffix in THUMBNAIL_SUFFIXES:
                (WORKFLOWS / f"{thumbnail.stem}{suffix}").unlink(missing_ok=True)
            shutil.copy(thumbnail, WORKFLOWS / thumbnail.name)
            print(f"wrote {WORKFLOWS.relative_to(ROOT) / thumbnail.name}")
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())
