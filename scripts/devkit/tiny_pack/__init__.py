"""Test-only ComfyUI nodes (never shipped): tiny SDXL- and SD1.5-architecture models and a node that fails on
purpose.

ComfyUI's checkpoint detection accepts only real SDXL sizes, so CheckpointLoaderSimple cannot load the tiny
model. This loader builds MODEL / CLIP / VAE from ComfyUI's own classes from the files that
``scripts/devkit/tiny_models/factory.py`` writes into ``models/tiny_sdxl``: the same weights the trainer reads.
"""

import json
import os

import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.sd1_clip
import comfy.sdxl_clip
import comfy.supported_models
import comfy.supported_models_base
import comfy.utils
import folder_paths
import torch
from comfy_api.latest import ComfyExtension, io
from safetensors import safe_open
from typing_extensions import override

UNET_PREFIX = "model.diffusion_model."
folder_paths.add_model_folder_path("tiny_sdxl", os.path.join(folder_paths.models_dir, "tiny_sdxl"))


def _tiny_file(name):
    return folder_paths.get_full_path_or_raise("tiny_sdxl", name)


def _patcher(model):
    return comfy.model_patcher.ModelPatcher(
        model,
        load_device=comfy.model_management.get_torch_device(),
        offload_device=comfy.model_management.unet_offload_device(),
    )


def _tiny_unet_config():
    """The tiny SDXL UNet's ComfyUI config, from its file's metadata (the factory writes it there)."""
    with safe_open(_tiny_file("unet.safetensors"), framework="pt") as f:
        return json.loads(f.metadata()["tiny_sdxl.unet_config"])


def _random_model(model_config):
    """A MODEL of ``model_config``'s architecture with seeded small random weights (ComfyUI's ops skip init:
    unfilled weights give NaN outputs)."""
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model({}, UNET_PREFIX, device=torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_((torch.randn(p.shape, generator=generator) * 0.02).to(p.dtype))
    return _patcher(model)


def load_tiny_model(path=None):
    sd, metadata = comfy.utils.load_torch_file(
        path or _tiny_file("unet.safetensors"), safe_load=True, return_metadata=True
    )
    model_config = comfy.supported_models.SDXL(json.loads(metadata["tiny_sdxl.unet_config"]))
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model(sd, UNET_PREFIX, device=torch.device("cpu"))
    model.load_model_weights(sd, UNET_PREFIX)
    return _patcher(model)


def load_tiny_clip():
    sd, metadata = comfy.utils.load_torch_file(_tiny_file("clip.safetensors"), safe_load=True, return_metadata=True)
    target = comfy.supported_models_base.ClipTarget(comfy.sdxl_clip.SDXLTokenizer, comfy.sdxl_clip.SDXLClipModel)
    options = {
        "dtype": torch.float32,
        "clip_l_model_config": json.loads(metadata["tiny_sdxl.clip_l_config"]),
        "clip_g_model_config": json.loads(metadata["tiny_sdxl.clip_g_config"]),
    }
    clip = comfy.sd.CLIP(
        target,
        embedding_directory=folder_paths.get_folder_paths("embeddings"),
        parameters=comfy.utils.calculate_parameters(sd),
        model_options=options,
    )
    missing, unexpected = clip.load_sd(sd, full_model=True)
    missing = [k for k in missing if "logit_scale" not in k]
    if missing or unexpected:
        raise RuntimeError(f"tiny CLIP keys do not match: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return clip


def load_tiny_vae():
    return comfy.sd.VAE(sd=comfy.utils.load_torch_file(_tiny_file("taesd.safetensors"), safe_load=True))


class TinySDXLLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ImageAlchemyTest_TinySDXLLoader",
            display_name="Tiny SDXL Loader (tests)",
            category="Image Alchemy/testing",
            description="Loads the tiny random SDXL-architecture model from models/tiny_sdxl (tests and demo only).",
            inputs=[],
            outputs=[io.Model.Output(), io.Clip.Output(), io.Vae.Output()],
        )

    @classmethod
    def execute(cls) -> io.NodeOutput:
        return io.NodeOutput(load_tiny_model(), load_tiny_clip(), load_tiny_vae())


class FailOnPurpose(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ImageAlchemyTest_FailOnPurpose",
            display_name="Fail On Purpose (tests)",
            category="Image Alchemy/testing",
            description="Raises an error, to check that one failing node fails only its own prompt.",
            inputs=[io.Image.Input("image")],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, image) -> io.NodeOutput:
        raise RuntimeError("FailOnPurpose: this node always fails (test-only).")


class ShapedImage(io.ComfyNode):
    """IMAGE tensors core nodes cannot make (empty batch, 1 or 2 channels): for bad-input tests."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ImageAlchemyTest_ShapedImage",
            display_name="Shaped Image (tests)",
            category="Image Alchemy/testing",
            description="A B×H×W×C IMAGE of random values in 0..1 (B may be 0), for bad-input tests.",
            inputs=[
                io.Int.Input("batch", default=1, min=0, max=4096),
                io.Int.Input("height", default=64, min=1),
                io.Int.Input("width", default=64, min=1),
                io.Int.Input("channels", default=3, min=1, max=8),
            ],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, batch, height, width, channels) -> io.NodeOutput:
        generator = torch.Generator().manual_seed(0)
        return io.NodeOutput(torch.rand(batch, height, width, channels, generator=generator))


class DiscMask(io.ComfyNode):
    """A known subject: stands in for GroundedSAMMask (same outputs) where random tiny detectors would find
    arbitrary shapes."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ImageAlchemyTest_DiscMask",
            display_name="Disc Mask (tests)",
            category="Image Alchemy/testing",
            description="A centred disc of the given radius (a fraction of the short side) as each image's mask.",
            inputs=[io.Image.Input("image"), io.Float.Input("radius", default=0.15, min=0.0, max=1.0)],
            outputs=[io.Mask.Output(), io.Image.Output()],
        )

    @classmethod
    def execute(cls, image, radius) -> io.NodeOutput:
        batch, height, width = image.shape[:3]
        yy, xx = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
        disc = ((yy - height / 2) ** 2 + (xx - width / 2) ** 2 <= (radius * min(height, width)) ** 2).float()
        return io.NodeOutput(disc.expand(batch, -1, -1).clone(), image)


def load_tiny_sd15():
    """The tiny SD1.5 as ComfyUI's SD15 model config builds it, with its CLIP-L (the real SD1 tokenizer) and the
    shared TAESD VAE."""
    sd, metadata = comfy.utils.load_torch_file(
        _tiny_file("sd15_unet.safetensors"), safe_load=True, return_metadata=True
    )
    model_config = comfy.supported_models.SD15(json.loads(metadata["tiny_sd15.unet_config"]))
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model(sd, UNET_PREFIX, device=torch.device("cpu"))
    model.load_model_weights(sd, UNET_PREFIX)
    clip_sd, clip_meta = comfy.utils.load_torch_file(
        _tiny_file("sd15_clip.safetensors"), safe_load=True, return_metadata=True
    )
    target = comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel)
    clip = comfy.sd.CLIP(
        target,
        embedding_directory=folder_paths.get_folder_paths("embeddings"),
        parameters=comfy.utils.calculate_parameters(clip_sd),
        model_options={"dtype": torch.float32, "clip_l_model_config": json.loads(clip_meta["tiny_sd15.clip_l_config"])},
    )
    missing, unexpected = clip.load_sd(clip_sd, full_model=True)
    missing = [k for k in missing if "logit_scale" not in k and "text_projection" not in k]
    if missing or unexpected:
        raise RuntimeError(f"tiny SD1.5 CLIP keys do not match: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return _patcher(model), clip, load_tiny_vae()


class TinySD15Loader(io.ComfyNode):
    """The tiny SD1.5-architecture model (ComfyUI's SD15 model config: no added conditioning, CLIP-L 77×32)."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ImageAlchemyTest_TinySD15Loader",
            display_name="Tiny SD1.5 Loader (tests)",
            category="Image Alchemy/testing",
            description="Loads the tiny random SD1.5-architecture model from models/tiny_sdxl (tests only).",
            inputs=[],
            outputs=[io.Model.Output(), io.Clip.Output(), io.Vae.Output()],
        )

    @classmethod
    def execute(cls) -> io.NodeOutput:
        return io.NodeOutput(*load_tiny_sd15())


class TinySDXLVariant(io.ComfyNode):
    """Tiny SDXL MODELs of shapes the trainer refuses: 9- or 8-channel UNets and a scaled-fp8 one."""

    VARIANTS = ("inpaint", "instruct-pix2pix", "scaled fp8", "refiner")

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ImageAlchemyTest_TinySDXLVariant",
            display_name="Tiny SDXL Variant (tests)",
            category="Image Alchemy/testing",
            description="The tiny SDXL UNet as an inpainting (9 input channels), instruct-pix2pix (8), "
            "scaled-fp8 or SDXL-refiner model (a family the trainer does not train), built the way ComfyUI's "
            "checkpoint loader sets them up.",
            inputs=[io.Combo.Input("variant", options=list(cls.VARIANTS))],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, variant) -> io.NodeOutput:
        unet_config = _tiny_unet_config()
        if variant in ("inpaint", "instruct-pix2pix"):
            unet_config["in_channels"] = {"inpaint": 9, "instruct-pix2pix": 8}[variant]
        if variant == "refiner":
            model_config = comfy.supported_models.SDXLRefiner(unet_config)
        else:
            model_config = comfy.supported_models.SDXL(unet_config)
        if variant == "scaled fp8":  # what model_detection sets for a checkpoint with a `scaled_fp8` key
            model_config.scaled_fp8 = torch.float8_e4m3fn
        return io.NodeOutput(_random_model(model_config))


class TinySDXLFileLoader(io.ComfyNode):
    """The tiny model loaded from a given UNet file, recorded on the ModelPatcher the way ComfyUI 0.33's
    UNETLoader records its file (``cached_patcher_init = (load_diffusion_model, (path, options))``); ComfyUI's
    own loaders refuse the tiny architecture, so this stands in for them."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ImageAlchemyTest_TinySDXLFileLoader",
            display_name="Tiny SDXL Loader from a file (tests)",
            category="Image Alchemy/testing",
            description="The tiny SDXL model with its UNet read from unet_path, which the MODEL remembers.",
            inputs=[io.String.Input("unet_path", tooltip="Absolute path of a tiny-model UNet .safetensors.")],
            outputs=[io.Model.Output(), io.Clip.Output(), io.Vae.Output()],
        )

    @classmethod
    def execute(cls, unet_path) -> io.NodeOutput:
        model = load_tiny_model(unet_path)
        model.cached_patcher_init = (comfy.sd.load_diffusion_model, (unet_path, {}))
        return io.NodeOutput(model, load_tiny_clip(), load_tiny_vae())


class FixtureExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [
            TinySDXLLoader,
            TinySDXLFileLoader,
            FailOnPurpose,
            ShapedImage,
            DiscMask,
            TinySD15Loader,
            TinySDXLVariant,
        ]


async def comfy_entrypoint() -> FixtureExtension:
    return FixtureExtension()
