"""The example workflows, declared as nodes on a grid (col, row), widget values and links {input: (node, slot)}.

scripts/build_example_workflows.py turns them into example_workflows/*.json with ComfyUI's own frontend.
"""

CHECKPOINT = "sd_xl_base_1.0.safetensors"
SUBJECT_LORA = "iklan_dog.safetensors"
TOKEN, CLASS_WORD = "iklan", "dog"


def note(key, col, row, text, width=340, height=200):
    return dict(key=key, type="Note", col=col, row=row, widgets={"text": text}, size=[width, height])


def stage1(col=0, scene="a photo of a dog on a beach, golden hour, 35mm"):
    """Checkpoint + class-word prompt + KSampler + decode: the unmodified SDXL paints the scene."""
    return [
        dict(key="ckpt", type="CheckpointLoaderSimple", col=col, row=0, widgets={"ckpt_name": CHECKPOINT}),
        dict(key="scene_prompt", type="CLIPTextEncode", col=col + 1, row=0, widgets={"text": scene},
             links={"clip": ("ckpt", 1)}),
        dict(key="negative", type="CLIPTextEncode", col=col + 1, row=1, widgets={"text": "blurry, lowres, watermark"},
             links={"clip": ("ckpt", 1)}),
        dict(key="latent", type="EmptyLatentImage", col=col + 1, row=2,
             widgets={"width": 1024, "height": 1024, "batch_size": 1}),
        dict(key="stage1", type="KSampler", col=col + 2, row=0,
             widgets={"seed": 42, "control_after_generate": "fixed", "steps": 30, "cfg": 7.0,
                      "sampler_name": "dpmpp_2m", "scheduler": "karras", "denoise": 1.0},
             links={"model": ("ckpt", 0), "positive": ("scene_prompt", 0), "negative": ("negative", 0),
                    "latent_image": ("latent", 0)}),
        dict(key="scene", type="VAEDecode", col=col + 3, row=0, links={"samples": ("stage1", 0), "vae": ("ckpt", 2)}),
    ]


def stage2(col, lora_link=None):
    """GroundedSAMMask → DecayBlur → LoRAImg2ImgInsert with the token prompt, saved."""
    insert_links = {"model": ("ckpt", 0), "vae": ("ckpt", 2), "image": ("blurred", 0), "mask": ("mask", 0),
                    "positive": ("subject_prompt", 0), "negative": ("negative", 0)}
    if lora_link:
        insert_links["lora_name_override"] = lora_link
    return [
        dict(key="dino", type="ImageAlchemy_GroundingDinoLoader", col=col, row=1,
             widgets={"model_name": "groundingdino_swint_ogc.pth"}),
        dict(key="sam", type="ImageAlchemy_SAMLoader", col=col, row=1.6, widgets={"model_name": "sam_vit_h_4b8939.pth"}),
        dict(key="mask", type="ImageAlchemy_GroundedSAMMask", col=col + 1, row=0,
             widgets={"prompt": CLASS_WORD, "box_threshold": 0.3, "text_threshold": 0.25, "area_penalty": 0.1,
                      "max_objects": 1, "grow": 8, "feather": 0, "if_nothing_found": "error"},
             links={"image": ("scene", 0), "grounding_dino": ("dino", 0), "sam": ("sam", 0)}),
        dict(key="blurred", type="ImageAlchemy_DecayBlur", col=col + 2, row=0,
             widgets={"mode": "exponential-decay", "kernel_size": 151, "sigma": 100.0, "decay_lambda": 5.0},
             links={"image": ("scene", 0), "mask": ("mask", 0)}),
        dict(key="subject_prompt", type="CLIPTextEncode", col=col + 2, row=1.5,
             widgets={"text": f"a photo of {TOKEN} {CLASS_WORD} on a beach, golden hour, 35mm"},
             links={"clip": ("ckpt", 1)}),
        dict(key="insert", type="ImageAlchemy_LoRAImg2ImgInsert", col=col + 3, row=0,
             widgets={"lora_name": SUBJECT_LORA, "lora_strength": 1.0, "seed": 7, "control_after_generate": "fixed",
                      "steps": 30, "cfg": 6.0, "sampler_name": "dpmpp_2m", "scheduler": "karras", "denoise": 0.75,
                      "grow": 8, "feather": 16, "crop_mode": "crop", "context": 0.5, "resolution": 1024},
             links=insert_links),
        dict(key="save", type="SaveImage", col=col + 4, row=0, widgets={"filename_prefix": "image_alchemy/final"},
             links={"images": ("insert", 0)}),
        dict(key="save_scene", type="SaveImage", col=col + 4, row=1.6, widgets={"filename_prefix": "image_alchemy/scene"},
             links={"images": ("scene", 0)}),
    ]


TWO_STAGE_NOTE = (
    "Two-stage generation (Image-Alchemy)\n\n"
    "Stage 1: the unmodified SDXL paints the scene with the CLASS word ('dog').\n"
    "Stage 2: GroundedSAMMask finds the dog, DecayBlur blurs it (full blur on the subject, fading with distance), "
    "and LoRAImg2ImgInsert repaints only that region with your subject LoRA and the TOKEN prompt ('iklan dog').\n\n"
    "Model files:\n"
    f"- models/checkpoints/{CHECKPOINT} (any SDXL checkpoint)\n"
    "- models/grounding-dino/groundingdino_swint_ogc.pth + bert-base-uncased/ beside it (or a transformers folder)\n"
    "- models/sams/sam_vit_h_4b8939.pth (or vit_l / vit_b)\n"
    f"- models/loras/{SUBJECT_LORA} (from the 'learn a subject' workflow)"
)

WORKFLOWS = [
    dict(name="2_two_stage_generation", colWidth=370, rowHeight=330, scale=0.7,
         nodes=[note("about", 0, 1.4, TWO_STAGE_NOTE, 360, 420)] + stage1() + stage2(col=4)),
]
