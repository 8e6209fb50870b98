"""GroundedSAMMask's models under ComfyUI's memory management, in process on the CPU: loading them goes through
load_models_gpu (room is made first), they are then loaded models ComfyUI knows, and ComfyUI's own free_memory
moves them to the offload device when something else needs the room; they still segment afterwards."""

import numpy as np
import pytest
import torch
from image_alchemy.alchemy import grounded_sam, grounding
from image_alchemy.alchemy import sam as sam_ops
from tiny_models import detectors as tiny_detectors


@pytest.fixture(scope="module")
def segment_nodes(comfy_dir, tiny_models):
    from tiny_models import factory

    factory.use_comfyui(comfy_dir)
    from image_alchemy.nodes import segment

    return segment


def test_models_are_loaded_and_offloaded_by_comfy_memory_management(segment_nodes, tmp_path):
    import comfy.model_management as mm

    detector = grounding.load_grounding_dino(tiny_detectors.write_grounding_dino_hf(tmp_path / "dino"))
    sam = sam_ops.load_sam(tiny_detectors.write_sam(tmp_path / "sam.pth"))
    patchers = [segment_nodes.comfy_patcher(detector.model), segment_nodes.comfy_patcher(sam)]
    assert segment_nodes.comfy_patcher(sam) is patchers[1]  # one patcher per model object
    assert "_image_alchemy_patcher" not in sam.state_dict() and not any("patcher" in k for k in sam.state_dict())

    device = segment_nodes.load_for_run(detector.model, sam)
    assert device == mm.get_torch_device()
    loaded = [m.model for m in mm.current_loaded_models]
    assert all(any(p is m for m in loaded) for p in patchers)
    assert all(p.device == device for p in sam.parameters())
    # What ComfyUI does before the sampler loads: free memory. Ours go to the offload device and leave the list.
    mm.free_memory(1e30, device)
    loaded = [m.model for m in mm.current_loaded_models]
    assert not any(any(p is m for m in loaded) for p in patchers)
    offload = mm.unet_offload_device()
    assert all(p.device == offload for p in sam.parameters())
    assert all(p.device == offload for p in detector.model.parameters())
    # Loaded again for the next prompt, they segment as before.
    rgb = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
    image = torch.from_numpy(rgb).float()[None] / 255.0
    settings = dict(box_threshold=0.0, text_threshold=0.0, area_penalty=0.1, max_objects=2, on_empty="empty mask")
    before, _ = grounded_sam.segment_batch(image, detector, sam, "dog", **settings)
    segment_nodes.load_for_run(detector.model, sam)
    after, _ = grounded_sam.segment_batch(image, detector, sam, "dog", device=device, **settings)
    assert torch.equal(before, after) and before.sum() > 0
