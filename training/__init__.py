"""The subject-LoRA trainer. Runs out of ComfyUI's graph (child process or `python -m training`).

Imports no ComfyUI code. Modules: settings (the dataclass), unet (ComfyUI/LDM weights → diffusers UNet),
trainer (peft LoRA loop on cached tensors), lora_file (kohya file + metadata), job (job folders and the run
function), fit (diffusers encoding for command-line users), cli (`python -m training`).
"""
