"""The subject-LoRA trainer. Runs out of ComfyUI's graph (child process or `python -m training`).

Imports no ComfyUI code.
"""
