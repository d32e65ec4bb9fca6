"""The project's addresses, defined once (pyproject.toml's [project.urls] states the same; a test compares them)."""

REPOSITORY_URL = "https://github.com/comfyui-drum/ComfyUI-DrUM"
ISSUES_URL = f"{REPOSITORY_URL}/issues"
