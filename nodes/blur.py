"""DecayBlur: blur the subject before the img2img insert (paper 001 A.1; docs/DESIGN.md §4.5), over ``alchemy.blur``."""

from comfy_api.latest import io, ui

from ..alchemy import blur, layout, masks
from .checks import check_choice, check_images, node_error
from .search import search_aliases

NODE = "DecayBlur"
DISTANCE_UNITS = ("kernel radius", "pixel", "image short side")


def distance_unit_pixels(unit: str, kernel_size: int, height: int, width: int) -> float:
    """How many pixels one unit of d is (the paper's formula leaves it open; see docs/DESIGN.md §4.5)."""
    check_choice(NODE, "distance_unit", unit, DISTANCE_UNITS)
    if unit == "kernel radius":
        return float(max(kernel_size // 2, 1))
    if unit == "pixel":
        return 1.0
    return float(min(height, width))  # image short side


class DecayBlur(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ImageAlchemy_DecayBlur",
            **search_aliases("decay blur", "exponential blur", "blur subject", "image alchemy"),
            display_name="Decay Blur (subject)",
            category="Image Alchemy/image",
            description="Blurs the masked subject so the img2img insert can repaint it from the LoRA: a plain "
            "Gaussian inside the mask, or a blur that fades out as e^(−λd) with the distance d from "
            "the subject, so the background keeps its detail and there is no seam.",
            inputs=[
                io.Image.Input("image", tooltip="Images to blur (RGB or RGBA; alpha is passed through)."),
                io.Mask.Input(
                    "mask",
                    tooltip="The subject (1 inside). One mask for all images or one per image; "
                    "resized to the image if its size differs.",
                ),
                io.Combo.Input(
                    "mode",
                    options=list(blur.MODES),
                    default="exponential-decay",
                    tooltip="gaussian: uniform blur composited inside the mask. exponential-decay: full "
                    "blur on the subject, falling off as e^(−λd) outside it (the paper's best).",
                ),
                io.Int.Input(
                    "kernel_size",
                    default=151,
                    min=1,
                    max=1023,
                    step=2,
                    tooltip="Gaussian kernel size in pixels (odd). The paper uses 151.",
                ),
                io.Float.Input(
                    "sigma",
                    default=100.0,
                    min=0.1,
                    max=1000.0,
                    step=0.1,
                    tooltip="Gaussian σ in pixels. The paper uses 100.",
                ),
                io.Float.Input(
                    "decay_lambda",
                    default=5.0,
                    min=0.0,
                    max=100.0,
                    step=0.1,
                    tooltip="λ in e^(−λd) (exponential-decay only). The paper uses 5; 0 blurs everything.",
                ),
                io.Combo.Input(
                    "distance_unit",
                    options=list(DISTANCE_UNITS),
                    default="kernel radius",
                    tooltip="Unit of d (exponential-decay only): the paper does not state it. With the "
                    "kernel radius (75 px at 151) and λ=5 the blur halves about 10 px out.",
                ),
                io.Combo.Input(
                    "decay",
                    options=list(blur.DECAYS),
                    default="sigma",
                    tooltip="What e^(−λd) scales (exponential-decay only): sigma shrinks the blur radius "
                    "(a level-stack approximation, within 0.015 of the exact per-pixel Gaussian "
                    "on 0..1 images); opacity fades the full blur (exact).",
                ),
            ],
            outputs=[
                io.Image.Output(display_name="image", tooltip="The blurred images, same size and batch."),
                io.Mask.Output(
                    display_name="strength",
                    tooltip="Blur strength per pixel (mask in gaussian mode, e^(−λd) in decay mode).",
                ),
                io.Mask.Output(
                    display_name="region",
                    tooltip="1 where the blur changed the image, 0 where the output is the input bit "
                    "for bit (e^(−λd) never reaches 0: the sigma decay stops where σ·e^(−λd) < "
                    "0.125 px). Link it to the insert's mask so the repaint covers the whole "
                    "blur.",
                ),
            ],
        )

    @classmethod
    def execute(cls, image, mask, mode, kernel_size, sigma, decay_lambda, distance_unit, decay) -> io.NodeOutput:
        if kernel_size % 2 == 0:
            raise node_error(NODE, f"kernel_size must be odd (got {kernel_size}); use {kernel_size + 1}.")
        check_images(NODE, image)
        batch, height, width = image.shape[:3]
        mask = masks.match_batch(masks.resize_mask(mask, height, width), batch, NODE)
        unit = distance_unit_pixels(distance_unit, kernel_size, height, width)
        out_images, strengths, regions = [], [], []
        for img, plane in zip(layout.to_numpy(image), layout.to_numpy(mask)):
            out, strength = blur.decay_blur(
                img,
                plane,
                mode=mode,
                kernel_size=kernel_size,
                sigma=sigma,
                lam=decay_lambda,
                distance_unit=unit,
                decay=decay,
            )
            out_images.append(out)
            strengths.append(strength)
            regions.append(blur.changed_region(strength, mode=mode, sigma=sigma, decay=decay))
        blurred = layout.stack(out_images).to(image.dtype)
        # Shown on the node: the blur is easier to judge by eye than by wiring a preview node.
        return io.NodeOutput(
            blurred, layout.stack(strengths), layout.stack(regions), ui=ui.PreviewImage(blurred, cls=cls)
        )


NODES = [DecayBlur]
