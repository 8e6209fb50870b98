"""GroundedSAMMask (the node's whole run: models handed to ComfyUI's memory management, detection, SAM, M* choice,
preview drawn and saved) vs a bare GroundingDINO + SAM forward on the same image (processor, detector forward and
post-processing, then SAM's image embedding and multimask decoding of the top box), in one process.

Prints ``name: value`` lines; the ratio is our time / bare time over back-to-back pairs (median), goal ≤ 1.1.
By default on the tests' tiny random detectors (written to a temporary folder: nothing is downloaded), where the
forward is cheap and fixed costs weigh most; pass --dino (a Hugging Face GroundingDINO folder or an original .pth)
and --sam (a SAM checkpoint) to measure real models.
Run: .venv/bin/python bench/segment.py [--size 512] [--repeat 5] [--gpu] [--dino PATH --sam PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
COMFY_DIR = ROOT / ".cache" / "comfyui"


def setup(tmp: Path, gpu: bool):
    sys.path.insert(0, str(ROOT / "scripts" / "devkit"))
    from pack_import import in_process

    in_process(COMFY_DIR, gpu)
    import folder_paths

    folder_paths.set_temp_directory(str(tmp / "temp"))  # where the node's preview is saved
    from image_alchemy.nodes.segment import GroundedSAMMask

    return GroundedSAMMask


@torch.no_grad()
def bare_forward(detector, sam, rgb: np.ndarray, prompt: str, device) -> torch.Tensor:
    """What any GroundingDINO + SAM pipeline has to run: no policy, no selection rule, no preview."""
    from image_alchemy.alchemy import grounding
    from segment_anything import SamPredictor

    inputs = detector.processor(images=rgb, text=grounding.caption(prompt), return_tensors="pt").to(device)
    outputs = detector.model(**inputs)
    found = detector.processor.post_process_grounded_object_detection(
        outputs, inputs["input_ids"], threshold=0.0, text_threshold=0.0, target_sizes=[rgb.shape[:2]]
    )[0]
    box = found["boxes"][found["scores"].argmax()][None]
    predictor = SamPredictor(sam)
    predictor.set_image(rgb, image_format="RGB")
    boxes = predictor.transform.apply_boxes_torch(box.to(device), rgb.shape[:2])
    masks, _, _ = predictor.predict_torch(point_coords=None, point_labels=None, boxes=boxes, multimask_output=True)
    return masks


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--gpu", action="store_true", help="run on the GPU (default: --cpu like the tests)")
    parser.add_argument("--dino", help="GroundingDINO folder or .pth (default: the tiny test detector)")
    parser.add_argument("--sam", help="SAM checkpoint (default: the tiny test SAM)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        Node = setup(tmp, args.gpu)
        import comfy.model_management as mm
        import comfy.utils
        from image_alchemy.alchemy import grounding
        from image_alchemy.alchemy import sam as sam_ops
        from image_alchemy.nodes.segment import load_for_run
        from tiny_models import detectors as tiny_detectors

        comfy.utils.set_progress_bar_enabled(False)
        detector = grounding.load_grounding_dino(args.dino or tiny_detectors.write_grounding_dino_hf(tmp / "dino"))
        sam = sam_ops.load_sam(args.sam or tiny_detectors.write_sam(tmp / "sam.pth"))
        rgb = (np.random.default_rng(0).random((args.size, args.size, 3)) * 255).astype(np.uint8)
        image = torch.from_numpy(rgb).float()[None] / 255.0
        settings = dict(
            prompt="dog",
            box_threshold=0.0,
            text_threshold=0.0,
            area_penalty=0.1,
            max_objects=1,
            grow=0,
            feather=0,
            if_nothing_found="empty mask",
        )

        def ours():
            return Node.execute(image, detector, sam, **settings)

        def bare():
            device = load_for_run(detector.model, sam)  # the bare side runs on the same, already loaded models
            return bare_forward(detector, sam, rgb, settings["prompt"], device)

        ours(), bare()  # warm-up
        ratios, refs = [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            bare()
            t1 = time.perf_counter()
            ours()
            t2 = time.perf_counter()
            ratios.append((t2 - t1) / (t1 - t0))
            refs.append(t1 - t0)
        print(f"models: {'tiny test detectors' if not (args.dino or args.sam) else f'{args.dino} + {args.sam}'}")
        print(f"device: {mm.get_torch_device()}")
        print(f"image_size: {args.size}")
        print(f"grounded_sam_mask_vs_bare_forward: {statistics.median(ratios):.2f}")
        print(f"bare_forward_seconds: {statistics.median(refs):.3f}")
        print(f"load_average_1min: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
