"""Tiny random models in the real architectures and file formats (SDXL UNet / CLIP / TAESD, the diffusers
pipeline, GroundingDINO, SAM, evaluation backbones, kohya LoRAs) and the synthetic subjects: tests, `make demo`,
the generators, bench/ and toy_world share them. Never shipped."""
