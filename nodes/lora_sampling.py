"""LoRAImg2ImgInsert's ComfyUI side: the LoRA patched onto a clone of the model (its file checked, read as
tensors only), and KSampler's img2img on one crop with a noise mask (ComfyUI's SetLatentNoiseMask)."""

import pickle

import comfy.sample
import comfy.sd
import comfy.utils
import folder_paths
import latent_preview
from safetensors import SafetensorError

from .checks import first_line, node_error

NODE = "LoRAImg2ImgInsert"


def apply_lora(model, lora_name: str, strength: float):
    """The LoRA patched onto a clone of ``model`` (the input is left as it is); strength 0 skips loading."""
    if strength == 0:
        return model
    # get_full_path normalises the name under each loras root, so "../" or absolute names cannot leave the folder.
    path = folder_paths.get_full_path("loras", lora_name)
    if path is None:
        raise ValueError(
            f"{NODE}: the LoRA '{lora_name}' is not in models/loras: pick one from the list, train "
            "one with Train Subject LoRA, or copy the .safetensors file there and refresh the page."
        )
    try:
        lora = comfy.utils.load_torch_file(path, safe_load=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"{NODE}: the LoRA '{lora_name}' holds pickled Python objects besides tensors, which are "
            "never loaded (unpickling can run code): use a .safetensors LoRA."
        ) from e
    except (ValueError, RuntimeError, OSError, EOFError, SafetensorError) as e:
        raise node_error(
            NODE,
            f"cannot read the LoRA '{lora_name}' ({first_line(e)}): the file is damaged or not a "
            "LoRA; copy or train it again.",
        ) from e
    patched, _ = comfy.sd.load_lora_for_models(model, None, lora, strength, 0)
    if len(patched.patches) == len(model.patches):
        raise ValueError(
            f"{NODE}: none of the keys in the LoRA '{lora_name}' match this model's UNet. Use a LoRA "
            "trained for this base model (SDXL UNet, kohya or diffusers key format)."
        )
    return patched


def sample_region(
    model, vae, pixels, noise_mask, positive, negative, seed, batch_index, steps, cfg, sampler_name, scheduler, denoise
):
    """KSampler's img2img on one 1×H×W×3 crop with a 1×H×W noise mask; returns the decoded 1×H×W×3 image."""
    latent = vae.encode(pixels[..., :3])
    latent = comfy.sample.fix_empty_latent_channels(model, latent)
    # batch_index picks the noise KSampler would give this image in a batch with the same seed.
    noise = comfy.sample.prepare_noise(latent, seed, [batch_index])
    callback = latent_preview.prepare_callback(model, steps)
    samples = comfy.sample.sample(
        model,
        noise,
        steps,
        cfg,
        sampler_name,
        scheduler,
        positive,
        negative,
        latent,
        denoise=denoise,
        noise_mask=noise_mask.reshape(1, 1, *noise_mask.shape[-2:]),
        callback=callback,
        disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED,
        seed=seed,
    )
    images = vae.decode(samples)
    if images.ndim == 5:  # video VAEs decode B×T×H×W×C
        images = images.reshape(-1, *images.shape[-3:])
    return images
