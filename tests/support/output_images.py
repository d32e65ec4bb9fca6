"""Images as ComfyUI's and A1111's save nodes write them, and the ComfyUI API graphs they record (shared by the tests)."""

import json
import os
import struct
import zlib

from PIL import Image
from PIL.PngImagePlugin import PngInfo

# --- ComfyUI API graphs, as the frontend queues them ------------------------------------------


def checkpoint():
    return {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5.safetensors"}}


def encode(text, clip=("4", 1)):
    return {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": list(clip)}}


def ksampler(positive, negative, model=("4", 0), latent=("5", 0)):
    return {
        "class_type": "KSampler",
        "inputs": {
            "seed": 1,
            "steps": 20,
            "cfg": 8.0,
            "sampler_name": "euler",
            "scheduler": "normal",
            "denoise": 1.0,
            "model": list(model),
            "positive": list(positive),
            "negative": list(negative),
            "latent_image": list(latent),
        },
    }


def tail(samples=("3", 0)):
    return {
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": list(samples), "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    }


def sd1_graph(positive="a red fox in the snow", negative="blurry, watermark"):
    """ComfyUI's default SD1.5 graph."""
    return {"3": ksampler(("6", 0), ("7", 0)), "4": checkpoint(), "6": encode(positive), "7": encode(negative), **tail()}


def sdxl_graph():
    sdxl = {"width": 1024, "height": 1024, "crop_w": 0, "crop_h": 0, "target_width": 1024, "target_height": 1024}
    return {
        "3": ksampler(("6", 0), ("7", 0)),
        "4": checkpoint(),
        "6": {"class_type": "CLIPTextEncodeSDXL", "inputs": {**sdxl, "text_g": "a castle", "text_l": "oil painting", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncodeSDXL", "inputs": {**sdxl, "text_g": "ugly", "text_l": "ugly", "clip": ["4", 1]}},
        **tail(),
    }


def flux_graph():
    """CLIPTextEncodeFlux -> FluxGuidance -> BasicGuider -> SamplerCustomAdvanced, as ComfyUI's FLUX templates."""
    return {
        "4": checkpoint(),
        "5": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 1}},
        "6": {
            "class_type": "CLIPTextEncodeFlux",
            "inputs": {"clip_l": "", "t5xxl": "a lighthouse at dusk", "guidance": 3.5, "clip": ["4", 1]},
        },
        "26": {"class_type": "FluxGuidance", "inputs": {"guidance": 3.5, "conditioning": ["6", 0]}},
        "22": {"class_type": "BasicGuider", "inputs": {"model": ["4", 0], "conditioning": ["26", 0]}},
        "16": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "17": {"class_type": "BasicScheduler", "inputs": {"scheduler": "simple", "steps": 4, "denoise": 1.0, "model": ["4", 0]}},
        "25": {"class_type": "RandomNoise", "inputs": {"noise_seed": 1}},
        "13": {
            "class_type": "SamplerCustomAdvanced",
            "inputs": {"noise": ["25", 0], "guider": ["22", 0], "sampler": ["16", 0], "sigmas": ["17", 0], "latent_image": ["5", 0]},
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["13", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "flux", "images": ["8", 0]}},
    }


def primitive_graph():
    graph = sd1_graph()
    graph["10"] = {"class_type": "PrimitiveStringMultiline", "inputs": {"value": "a harbour in watercolor"}}
    graph["6"]["inputs"]["text"] = ["10", 0]
    return graph


def drum_graph():
    graph = sd1_graph(negative="lowres")
    graph["11"] = {"class_type": "DrUMHistoryLoader", "inputs": {"file": "none", "text": "history prompt one\nhistory prompt two"}}
    graph["12"] = {
        "class_type": "DrUMConditioner",
        "inputs": {"clip": ["4", 1], "adapters": ["13", 0], "history": ["11", 0], "text": "a knight, personalized", "degree": 0.5},
    }
    graph["3"]["inputs"]["positive"] = ["12", 0]
    del graph["6"]
    return graph


def save_png(path, graph=None, *, text=None, mtime=None, size=(8, 8)):
    """As ComfyUI's SaveImage: `prompt` and `workflow` text chunks."""
    info = PngInfo()
    if graph is not None:
        info.add_text("prompt", json.dumps(graph))
        info.add_text("workflow", json.dumps({"nodes": [], "links": []}))
    for key, value in (text or {}).items():
        info.add_text(key, value)
    Image.new("RGB", size, (200, 30, 30)).save(path, pnginfo=info, compress_level=4)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def save_animated_png(path, graph):
    """As ComfyUI's SaveAnimatedPNG: `comf` chunks after the image data."""
    info = PngInfo()
    info.add(b"comf", b"prompt\0" + json.dumps(graph).encode("latin-1"), after_idat=True)
    info.add(b"comf", b"workflow\0" + json.dumps({"nodes": []}).encode("latin-1"), after_idat=True)
    frames = [Image.new("RGB", (8, 8), (i * 40, 0, 0)) for i in range(3)]
    frames[0].save(path, pnginfo=info, save_all=True, duration=100, append_images=frames[1:])
    return path


def save_webp(path, graph, frames=1):
    """As ComfyUI's SaveAnimatedWEBP / the V3 WebP savers: EXIF 0x0110 "prompt:<json>", 0x010F "workflow:<json>"."""
    images = [Image.new("RGB", (8, 8), (0, i * 40, 0)) for i in range(frames)]
    exif = images[0].getexif()
    exif[0x0110] = f"prompt:{json.dumps(graph)}"
    exif[0x010F] = "workflow:{}".format(json.dumps({"nodes": []}))
    images[0].save(path, save_all=True, duration=100, append_images=images[1:], exif=exif, lossless=False, quality=80, method=4)
    return path


def save_a1111_jpeg(path, parameters):
    """As A1111 / Forge: the parameters text in EXIF UserComment, "UNICODE" + UTF-16 big-endian (piexif)."""
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + parameters.encode("utf-16-be")
    Image.new("RGB", (8, 8)).save(path, exif=exif.tobytes(), quality=90)
    return path


def png_with_chunk(path, keyword, payload):
    """A valid PNG with a tEXt chunk holding raw bytes."""
    data = bytearray(save_png(path).read_bytes())
    chunk = keyword + b"\0" + payload
    end = data.index(b"IEND") - 4
    data[end:end] = struct.pack(">I", len(chunk)) + b"tEXt" + chunk + struct.pack(">I", zlib.crc32(b"tEXt" + chunk))
    path.write_bytes(bytes(data))
    return path


def outputs(tmp_path):
    """An output folder: images saved at known times (not in name order), one in a sub-folder."""
    folder = tmp_path / "output"
    (folder / "sub").mkdir(parents=True)
    save_png(folder / "ComfyUI_00002_.png", sd1_graph("second"), mtime=2000)
    save_png(folder / "ComfyUI_00001_.png", sd1_graph("first"), mtime=1000)
    save_png(folder / "sub" / "x.png", primitive_graph(), mtime=3000)
    save_webp(folder / "anim.webp", flux_graph())
    os.utime(folder / "anim.webp", (4000, 4000))
    save_png(folder / "again.png", sd1_graph("first"), mtime=5000)
    return folder
