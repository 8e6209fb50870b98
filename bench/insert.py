"""LoRAImg2ImgInsert in crop mode vs a plain KSampler img2img over the whole image (LoRA applied on both sides),
for subject masks of 10% and 50% of the image, on the tiny random SDXL-architecture model, in one process.

Prints ``name: value`` lines; ratios are our time / reference time over back-to-back pairs (median).
- ``crop_native``: the crop sampled at its own pixel size (resolution 0): cost follows the crop's area.
- ``crop_full_res``: the crop scaled up to the whole image's area (resolution = image side): same sampling cost
  as the reference, spent on the subject (the point of crop mode with SDXL at 1024).
Grow / feather are the node defaults scaled to the image (8 / 16 px at 1024²); context 0.5.
Run: .venv/bin/python bench/insert.py [--size 256] [--steps 8] [--repeat 3] [--gpu]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
COMFY_DIR = ROOT / ".cache" / "comfyui"


def setup(tmp: Path, gpu: bool):
    sys.path.insert(0, str(ROOT / "scripts" / "devkit"))
    from pack_import import in_process

    in_process(COMFY_DIR, gpu)  # the pack as a package, the way ComfyUI loads it (its root never goes on sys.path)
    import folder_paths
    from tiny_models import factory
    from tiny_models.lora import write_kohya_lora

    paths = factory.write_tiny_sdxl(tmp / "tiny_sdxl")
    folder_paths.add_model_folder_path("tiny_sdxl", str(tmp / "tiny_sdxl"))
    folder_paths.add_model_folder_path("loras", str(tmp / "loras"))
    write_kohya_lora(tmp / "loras" / "subject.safetensors", paths["unet"])
    import tiny_pack  # after the tiny_sdxl folder above (it adds ComfyUI's own models/tiny_sdxl after it)
    from image_alchemy.nodes.insert import LoRAImg2ImgInsert

    return tiny_pack, LoRAImg2ImgInsert


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--gpu", action="store_true", help="sample on the GPU (default: --cpu like the tests)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tiny_pack, Insert = setup(Path(tmp), args.gpu)
        import comfy.sd
        import comfy.utils
        import folder_paths

        import nodes

        comfy.utils.set_progress_bar_enabled(False)  # tqdm lines would bury the results
        model, clip, vae = tiny_pack.load_tiny_model(), tiny_pack.load_tiny_clip(), tiny_pack.load_tiny_vae()
        positive = clip.encode_from_tokens_scheduled(clip.tokenize("a photo of iklan dog on a beach"))
        negative = clip.encode_from_tokens_scheduled(clip.tokenize(""))
        gen = torch.Generator().manual_seed(0)
        size = args.size
        image = torch.rand(1, size, size, 3, generator=gen)
        common = dict(seed=1, steps=args.steps, cfg=5.0, sampler_name="euler", scheduler="normal", denoise=0.75)

        def reference():
            lora = comfy.utils.load_torch_file(
                folder_paths.get_full_path_or_raise("loras", "subject.safetensors"), safe_load=True
            )
            patched, _ = comfy.sd.load_lora_for_models(model, None, lora, 1.0, 0)
            latent = {"samples": vae.encode(image)}
            out = nodes.common_ksampler(patched, positive=positive, negative=negative, latent=latent, **common)[0]
            return vae.decode(out["samples"])

        # The node's defaults (grow 8, feather 16) are meant for 1024² images; scale them with the image.
        grow, feather = max(1, round(8 * size / 1024)), max(1, round(16 * size / 1024))
        print(f"image_size: {size}")
        for area in (0.1, 0.5):
            side = int(round(size * area**0.5))
            mask = torch.zeros(1, size, size)
            top = (size - side) // 2
            mask[:, top : top + side, top : top + side] = 1.0
            for name, resolution in (("crop_native", 0), ("crop_full_res", size)):

                def ours():
                    return Insert.execute(
                        model,
                        vae,
                        image,
                        mask,
                        "subject.safetensors",
                        1.0,
                        positive,
                        negative,
                        grow=grow,
                        feather=feather,
                        crop_mode="crop",
                        context=0.5,
                        resolution=resolution,
                        **common,
                    )

                ours(), reference()  # warm-up
                ratios, refs = [], []
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    reference()
                    t1 = time.perf_counter()
                    ours()
                    t2 = time.perf_counter()
                    ratios.append((t2 - t1) / (t1 - t0))
                    refs.append(t1 - t0)
                print(f"insert_{name}_{int(area * 100)}pct_vs_whole_img2img: {statistics.median(ratios):.2f}")
        print(f"whole_img2img_seconds: {statistics.median(refs):.3f}")


if __name__ == "__main__":
    main()
