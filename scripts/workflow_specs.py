"""The example workflows, declared as nodes with widget values, links {input: (node, slot)} and a place: a group
(one per stage), a column rank inside it (col) and an order inside the column (row).

scripts/build_example_workflows.py turns them into example_workflows/*.json with ComfyUI's own frontend, which
lays them out from the nodes' real sizes (scripts/workflow_layout.js): col and row are ranks, not coordinates.
"""

CHECKPOINT = "sd_xl_base_1.0.safetensors"
SUBJECT_LORA = "iklan_dog.safetensors"
TOKEN, CLASS_WORD = "iklan", "dog"
GROUNDING_DINO = "groundingdino_swint_ogc.pth"
SAM = "sam_vit_h_4b8939.pth"
SAM3_CHECKPOINT = "sam3.1_multiplex_fp16.safetensors"
SAM_OFFICIAL = "https://github.com/facebookresearch/segment-anything#model-checkpoints"
SAM_LINE = f"- models/sams/{SAM} (or vit_l / vit_b): no official Hugging Face home; from Meta: {SAM_OFFICIAL}\n"

# Every downloadable file a shipped workflow names, with its official Hugging Face address and model folder: saved
# as properties.models on the loader node that names it, which ComfyUI's missing-models dialog offers to download.
# GroundingDINO's is the authors' own repository (the .pth loads alone: BERT's tokenizer ships with the pack);
# SAM's checkpoints have no official Hugging Face home (Meta publishes them at SAM_OFFICIAL), so none is given.
MODEL_DOWNLOADS = {
    CHECKPOINT: (
        "https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/sd_xl_base_1.0.safetensors",
        "checkpoints",
    ),
    GROUNDING_DINO: (
        "https://huggingface.co/ShilongLiu/GroundingDINO/resolve/main/groundingdino_swint_ogc.pth",
        "grounding-dino",
    ),
    SAM3_CHECKPOINT: (
        "https://huggingface.co/Comfy-Org/sam3.1/resolve/main/checkpoints/sam3.1_multiplex_fp16.safetensors",
        "checkpoints",
    ),
}


def note(key, col, row, text, width=340, height=200):
    return dict(key=key, type="Note", col=col, row=row, widgets={"text": text}, size=[width, height])


def stage1(col=0, row=0, scene="a photo of a dog on a beach, golden hour, 35mm", checkpoint=True):
    """Checkpoint + class-word prompt + KSampler + decode: the unmodified SDXL paints the scene."""
    loader = [dict(key="ckpt", type="CheckpointLoaderSimple", col=col, row=row, widgets={"ckpt_name": CHECKPOINT})]
    return (loader if checkpoint else []) + [
        dict(
            key="scene_prompt",
            type="CLIPTextEncode",
            col=col + 1,
            row=row,
            widgets={"text": scene},
            links={"clip": ("ckpt", 1)},
        ),
        dict(
            key="negative",
            type="CLIPTextEncode",
            col=col + 1,
            row=row + 1,
            widgets={"text": "blurry, lowres, watermark"},
            links={"clip": ("ckpt", 1)},
        ),
        dict(
            key="latent",
            type="EmptyLatentImage",
            col=col + 2,
            row=row + 1,
            widgets={"width": 1024, "height": 1024, "batch_size": 1},
        ),
        dict(
            key="stage1",
            type="KSampler",
            col=col + 2,
            row=row,
            widgets={
                "seed": 42,
                "control_after_generate": "fixed",
                "steps": 30,
                "cfg": 7.0,
                "sampler_name": "dpmpp_2m",
                "scheduler": "karras",
                "denoise": 1.0,
            },
            links={
                "model": ("ckpt", 0),
                "positive": ("scene_prompt", 0),
                "negative": ("negative", 0),
                "latent_image": ("latent", 0),
            },
        ),
        dict(key="scene", type="VAEDecode", col=col + 3, row=row, links={"samples": ("stage1", 0), "vae": ("ckpt", 2)}),
    ]


def stage2(col, row=0, lora_link=None, token_link=None):
    """GroundedSAMMask → DecayBlur → LoRAImg2ImgInsert with the token prompt, saved.

    With ``lora_link`` the insert takes the LoRA trained in the same graph; with ``token_link`` the token
    picked in the same graph is written into the subject prompt.
    """
    subject_text = f"a photo of {TOKEN} {CLASS_WORD} on a beach, golden hour, 35mm"
    # The insert starts from the blurred image, repaints DecayBlur's whole region (the blur's full extent, not
    # only the subject) and stitches onto the unblurred scene: outside that region the result is the scene.
    insert_links = {
        "model": ("ckpt", 0),
        "vae": ("ckpt", 2),
        "image": ("blurred", 0),
        "mask": ("blurred", 2),
        "positive": ("subject_prompt", 0),
        "negative": ("negative", 0),
        "scene": ("scene", 0),
    }
    if lora_link:
        insert_links["lora_name_from_training"] = lora_link
    nodes = []
    prompt_links = {"clip": ("ckpt", 1)}
    if token_link:
        nodes.append(
            dict(
                key="subject_text",
                type="StringReplace",
                col=col,
                row=row + 2,
                widgets={"string": subject_text.replace(TOKEN, "{token}"), "find": "{token}"},
                links={"replace": token_link},
            )
        )
        prompt_links["text"] = ("subject_text", 0)
    return nodes + [
        dict(
            key="dino",
            type="ImageAlchemy_GroundingDinoLoader",
            col=col,
            row=row + 1,
            widgets={"model_name": GROUNDING_DINO},
        ),
        dict(
            key="sam",
            type="ImageAlchemy_SAMLoader",
            col=col,
            row=row + 1.6,
            widgets={"model_name": SAM},
        ),
        dict(
            key="mask",
            type="ImageAlchemy_GroundedSAMMask",
            col=col + 1,
            row=row,
            widgets={
                "prompt": CLASS_WORD,
                "box_threshold": 0.3,
                "text_threshold": 0.25,
                "area_penalty": 0.1,
                "max_objects": 1,
                "grow": 8,
                "feather": 0,
                "if_nothing_found": "error",
            },
            links={"image": ("scene", 0), "grounding_dino": ("dino", 0), "sam": ("sam", 0)},
        ),
        dict(
            key="blurred",
            type="ImageAlchemy_DecayBlur",
            col=col + 2,
            row=row,
            widgets={"mode": "exponential-decay", "kernel_size": 151, "sigma": 100.0, "decay_lambda": 5.0},
            links={"image": ("scene", 0), "mask": ("mask", 0)},
        ),
        dict(
            key="subject_prompt",
            type="CLIPTextEncode",
            col=col + 2,
            row=row + 1.5,
            widgets={"text": subject_text},
            links=prompt_links,
        ),
        dict(
            key="insert",
            type="ImageAlchemy_LoRAImg2ImgInsert",
            col=col + 3,
            row=row,
            widgets={
                "lora_name": SUBJECT_LORA,
                "lora_strength": 1.0,
                "seed": 7,
                "control_after_generate": "fixed",
                "steps": 30,
                "cfg": 6.0,
                "sampler_name": "dpmpp_2m",
                "scheduler": "karras",
                "denoise": 0.75,
                "grow": 8,
                "feather": 16,
                "crop_mode": "crop",
                "context": 0.5,
                "resolution": 1024,
            },
            links=insert_links,
        ),
        dict(
            key="save",
            type="SaveImage",
            col=col + 4,
            row=row,
            widgets={"filename_prefix": "image_alchemy/final"},
            links={"images": ("insert", 0)},
        ),
        dict(
            key="save_scene",
            type="SaveImage",
            col=col + 4,
            row=row + 1.6,
            widgets={"filename_prefix": "image_alchemy/scene"},
            links={"images": ("scene", 0)},
        ),
    ]


SECOND_LORA, SECOND_TOKEN, SECOND_CLASS = "ffin_cat.safetensors", "ffin", "cat"
TWO_SCENE = "a photo of a dog and a cat on a sofa, living room, soft light, 35mm"


def two_subjects(col=0, row=0):
    """One GroundedSAMMask for 'dog . cat' → Mask From Batch per subject → DecayBlur + insert per subject, the cat's
    insert stitching onto the dog's result; each insert keeps the other subject's mask (see the README's overlap
    rule)."""
    find = [
        dict(
            key="dino",
            type="ImageAlchemy_GroundingDinoLoader",
            col=col,
            row=row,
            widgets={"model_name": GROUNDING_DINO},
        ),
        dict(
            key="sam",
            type="ImageAlchemy_SAMLoader",
            col=col,
            row=row + 1,
            widgets={"model_name": SAM},
        ),
        dict(
            key="mask",
            type="ImageAlchemy_GroundedSAMMask",
            col=col + 1,
            row=row,
            widgets={
                "prompt": f"{CLASS_WORD} . {SECOND_CLASS}",
                "box_threshold": 0.3,
                "text_threshold": 0.25,
                "area_penalty": 0.1,
                "max_objects": 1,
                "grow": 8,
                "feather": 0,
                "if_nothing_found": "error",
                "order_by": "most confident",
                "if_several_found": "use the first",
            },
            links={"image": ("scene", 0), "grounding_dino": ("dino", 0), "sam": ("sam", 0)},
        ),
        dict(
            key="pick_a",
            type="ImageAlchemy_MaskFromBatch",
            col=col + 2,
            row=row,
            widgets={"index": 0, "if_missing": "error"},
            links={"masks": ("mask", 2)},
        ),
        dict(
            key="pick_b",
            type="ImageAlchemy_MaskFromBatch",
            col=col + 2,
            row=row + 1,
            widgets={"index": 1, "if_missing": "error"},
            links={"masks": ("mask", 2)},
        ),
    ]
    return (
        find,
        subject_chain("a", TOKEN, CLASS_WORD, SUBJECT_LORA, onto=("scene", 0), keep=("pick_b", 0)),
        subject_chain("b", SECOND_TOKEN, SECOND_CLASS, SECOND_LORA, onto=("insert_a", 0), keep=("pick_a", 0), seed=8)
        + [
            dict(
                key="save",
                type="SaveImage",
                col=3,
                row=0,
                widgets={"filename_prefix": "image_alchemy/two_subjects"},
                links={"images": ("insert_b", 0)},
            ),
            dict(
                key="save_scene",
                type="SaveImage",
                col=3,
                row=1.6,
                widgets={"filename_prefix": "image_alchemy/scene"},
                links={"images": ("scene", 0)},
            ),
        ],
    )


def subject_chain(tag, token, class_word, lora, onto, keep, seed=7):
    """DecayBlur of the stage-1 scene around one subject's mask + its insert with its LoRA and token prompt."""
    return [
        dict(
            key=f"blurred_{tag}",
            type="ImageAlchemy_DecayBlur",
            col=0,
            row=0,
            widgets={"mode": "exponential-decay", "kernel_size": 151, "sigma": 100.0, "decay_lambda": 5.0},
            links={"image": ("scene", 0), "mask": (f"pick_{tag}", 0)},
        ),
        dict(
            key=f"prompt_{tag}",
            type="CLIPTextEncode",
            col=1,
            row=1.4,
            widgets={"text": f"a photo of {token} {class_word} on a sofa, living room, soft light, 35mm"},
            links={"clip": ("ckpt", 1)},
        ),
        dict(
            key=f"insert_{tag}",
            type="ImageAlchemy_LoRAImg2ImgInsert",
            col=2,
            row=0,
            widgets={
                "lora_name": lora,
                "lora_strength": 1.0,
                "seed": seed,
                "control_after_generate": "fixed",
                "steps": 30,
                "cfg": 6.0,
                "sampler_name": "dpmpp_2m",
                "scheduler": "karras",
                "denoise": 0.75,
                "grow": 8,
                "feather": 16,
                "crop_mode": "crop",
                "context": 0.5,
                "resolution": 1024,
            },
            links={
                "model": ("ckpt", 0),
                "vae": ("ckpt", 2),
                "image": (f"blurred_{tag}", 0),
                "mask": (f"blurred_{tag}", 2),
                "positive": (f"prompt_{tag}", 0),
                "negative": ("negative", 0),
                "scene": onto,
                "keep": keep,
            },
        ),
    ]


def learn_subject(col=1, token_link=("picker", 0)):
    """Five subject photos → Photo List (each keeps its size) → TrainSubjectLoRA; RareTokenPicker gives the token
    (the LoRA lands in models/loras)."""
    nodes = [dict(key="ckpt", type="CheckpointLoaderSimple", col=col + 1, row=2.2, widgets={"ckpt_name": CHECKPOINT})]
    for i in range(5):
        nodes.append(
            dict(
                key=f"photo{i}",
                type="LoadImage",
                col=col + i % 2,
                row=1.1 * (i // 2),
                widgets={"image": f"subject_{i}.png"},
            )
        )
    nodes += [
        dict(
            key="photos",
            type="ImageAlchemy_PhotoList",
            col=col + 2,
            row=0,
            links={f"image_{i + 1}": (f"photo{i}", 0) for i in range(5)},
        ),
        dict(
            key="picker",
            type="ImageAlchemy_RareTokenPicker",
            col=col + 3,
            row=0,
            widgets={"class_word": CLASS_WORD, "control_after_generate": "fixed"},
            links={"model": ("ckpt", 0), "clip": ("ckpt", 1), "vae": ("ckpt", 2)},
        ),
        dict(key="sheet", type="PreviewImage", col=col + 4, row=0, links={"images": ("picker", 1)}, size=[320, 320]),
        dict(key="scores", type="PreviewAny", col=col + 4, row=1.2, links={"source": ("picker", 2)}, size=[320, 200]),
        dict(
            key="train",
            type="ImageAlchemy_TrainSubjectLoRA",
            col=col + 5,
            row=0,
            widgets={
                "class_word": CLASS_WORD,
                "lora_name": SUBJECT_LORA.removesuffix(".safetensors"),
                "steps": 500,
                "rank": 8,
                "resolution": 1024,
                "batch_size": 1,
                "control_after_generate": "fixed",
            },
            links={
                "model": ("ckpt", 0),
                "clip": ("ckpt", 1),
                "vae": ("ckpt", 2),
                "images": ("photos", 0),
                "token": token_link,
            },
        ),
        dict(
            key="curve",
            type="PreviewImage",
            title="Loss curve",
            col=col + 6,
            row=0,
            links={"images": ("train", 1)},
            size=[320, 320],
        ),
        # The sample previews drawn during training (one row per preview_every steps), shown when it ends.
        dict(
            key="samples",
            type="PreviewImage",
            title="Sample previews",
            col=col + 6,
            row=1.2,
            links={"images": ("train", 2)},
            size=[320, 320],
        ),
    ]
    return nodes


LEARN_NOTE = (
    "Learn a subject (Image-Alchemy, stage 0)\n\n"
    "1. Put 4–5 photos of your subject in ComfyUI's input folder and pick them in the Load Image nodes; Photo "
    "List hands them to the trainer each at its own size (Image Batch would crop them all to the first one's).\n"
    "2. RareTokenPicker samples each candidate word with your model and keeps the one with the least prior "
    "(most varied pictures): 'sks' draws rifles, 'iklan' draws nothing in particular.\n"
    "3. TrainSubjectLoRA trains an attention-only LoRA on '<token> <class word>' with intentional overfitting "
    "and writes it to models/loras (the loss chart updates live on the node; sample previews show on it while it "
    "trains and, as a grid, in the preview beside it when it ends).\n\n"
    f"Model files: models/checkpoints/{CHECKPOINT} (any SDXL checkpoint; a missing one is offered for download "
    "when the workflow opens)."
)

TWO_STAGE_NOTE = (
    "Two-stage generation (Image-Alchemy)\n\n"
    "Stage 1: the unmodified SDXL paints the scene with the CLASS word ('dog').\n"
    "Stage 2: GroundedSAMMask finds the dog, DecayBlur blurs it (full blur on the subject, fading with distance), "
    "and LoRAImg2ImgInsert repaints the blurred region (DecayBlur's region output) with your subject LoRA and the "
    "TOKEN prompt ('iklan dog'), stitched onto the unblurred scene: outside that region the scene is kept as it "
    "is.\n\n"
    "Model files (a missing one is offered for download when the workflow opens, except SAM's):\n"
    f"- models/checkpoints/{CHECKPOINT} (any SDXL checkpoint)\n"
    f"- models/grounding-dino/{GROUNDING_DINO} (alone: BERT's tokenizer ships with the pack)\n"
    + SAM_LINE
    + f"- models/loras/{SUBJECT_LORA} (from the 'learn a subject' workflow)"
)

WHOLE_NOTE = (
    "The whole Image-Alchemy pipeline in one graph\n\n"
    "Top row: subject photos → RareTokenPicker → TrainSubjectLoRA (cached: a second run with the same photos and "
    "settings reuses the LoRA at once).\n"
    "Bottom row: the unmodified SDXL paints the scene with the class word; GroundedSAMMask + DecayBlur + "
    "LoRAImg2ImgInsert put the subject in, with the picked token written into the prompt (StringReplace) and the "
    "trained LoRA linked straight into the insert node.\n\n"
    "Model files: as in workflows 1 and 2 (a missing one is offered for download when the workflow opens, except "
    "SAM's):\n" + SAM_LINE
)

TWO_SUBJECTS_NOTE = (
    "Two subjects in one scene (Image-Alchemy, Figure 5)\n\n"
    "Stage 1: the unmodified SDXL paints the scene with both CLASS words ('a dog and a cat').\n"
    "Find: one GroundedSAMMask with the prompt 'dog . cat' gives one mask per phrase (phrase_masks: dog = 0, "
    "cat = 1); Mask From Batch splits them. order_by / if_several_found decide which dog when there are two, and "
    "the preview labels what was kept.\n"
    "Subjects: each gets its own DecayBlur, LoRA and TOKEN prompt. The cat's insert stitches onto the dog's "
    "result; each insert's keep input takes the other subject's mask, so neither repaints the other.\n\n"
    "Model files: as in workflow 2, plus a second subject LoRA:\n"
    + SAM_LINE
    + f"- models/loras/{SUBJECT_LORA} and models/loras/{SECOND_LORA} (from the 'learn a subject' workflow)"
)

# What the frontend adds to nodes during and after a run, which the layout leaves room for: an image preview on the
# nodes that show images (its IMAGE_PREVIEW widget takes at least 220 px; reserved in the node's size), and the Train
# Subject LoRA's live loss chart (web/train_loss.js grows the node by its 110 px chart + 8 when training starts;
# left free below the node).
SHOWS_IMAGES = [
    "LoadImage",
    "SaveImage",
    "PreviewImage",
    "ImageAlchemy_GroundedSAMMask",
    "ImageAlchemy_DecayBlur",
    "ImageAlchemy_TrainSubjectLoRA",
]
PREVIEW_HEIGHT = 220
GROWS_BELOW = {"ImageAlchemy_TrainSubjectLoRA": 118}

LEARN = dict(key="learn", title="Learn the subject: photos → rare token → LoRA", color="yellow")
STAGE1 = dict(key="stage1", title="Stage 1: the unmodified SDXL paints the scene (class word)", color="blue")
STAGE2 = dict(key="stage2", title="Stage 2: find, blur and repaint the subject with the LoRA (token)", color="green")
FIND = dict(key="find", title="Stage 2: find both subjects ('dog . cat': one mask per phrase)", color="green")
SUBJECT_A = dict(key="subject_a", title="Stage 2, subject A: iklan dog (its blur, LoRA and token prompt)", color="cyan")
SUBJECT_B = dict(
    key="subject_b", title="Stage 2, subject B: ffin cat, stitched onto subject A's result", color="purple"
)
SAM3_FIND = dict(key="sam3", title="Stage 2 (ComfyUI 0.33+): core SAM3_Detect finds the subject", color="green")


def grouped(group, nodes):
    return [dict(node, group=group["key"]) for node in nodes]


SAM3_NOTE = (
    "Two-stage generation with ComfyUI's own SAM3 (needs ComfyUI 0.33 or newer: SAM3_Detect is a core node there; "
    "older versions show it as missing)\n\n"
    "As workflow 2, but the subject's mask comes from core SAM3_Detect (text prompt 'dog'), so no GroundingDINO, "
    "SAM or BERT files are needed. With individual_masks on, SAM3_Detect gives one mask per object, most "
    "confident first; Mask From Batch takes object 0 (the most confident dog).\n\n"
    "Model files:\n"
    f"- models/checkpoints/{CHECKPOINT} (any SDXL checkpoint)\n"
    f"- models/checkpoints/{SAM3_CHECKPOINT} (SAM3.1, as ComfyUI's own SAM3 blueprint uses; offered for download)\n"
    f"- models/loras/{SUBJECT_LORA} (from the 'learn a subject' workflow)"
)


def sam3_find(col=0, row=0):
    return [
        dict(key="sam3_ckpt", type="CheckpointLoaderSimple", col=col, row=row, widgets={"ckpt_name": SAM3_CHECKPOINT}),
        dict(
            key="sam3_text",
            type="CLIPTextEncode",
            col=col,
            row=row + 1,
            widgets={"text": CLASS_WORD},
            links={"clip": ("sam3_ckpt", 1)},
        ),
        dict(
            key="detect",
            type="SAM3_Detect",
            col=col + 1,
            row=row,
            widgets={"threshold": 0.5, "refine_iterations": 2, "individual_masks": True},
            links={"model": ("sam3_ckpt", 0), "image": ("scene", 0), "conditioning": ("sam3_text", 0)},
        ),
        dict(
            key="pick",
            type="ImageAlchemy_MaskFromBatch",
            col=col + 2,
            row=row,
            widgets={"index": 0, "if_missing": "error"},
            links={"masks": ("detect", 0)},
        ),
    ]


def sam3_stage2(col):
    """Workflow 2's blur + insert on SAM3_Detect's mask (object 0)."""
    nodes = [
        n
        for n in stage2(col)
        if n["type"]
        not in ("ImageAlchemy_GroundingDinoLoader", "ImageAlchemy_SAMLoader", "ImageAlchemy_GroundedSAMMask")
    ]
    for n in nodes:
        n["col"] -= 1
        if n["key"] == "blurred":
            n["links"] = {**n["links"], "mask": ("pick", 0)}
    return nodes


_find, _subject_a, _subject_b = two_subjects()

WORKFLOWS = [
    dict(
        name="1_learn_subject",
        groups=[LEARN],
        layout=[["about", "learn"]],
        nodes=[note("about", 0, 0, LEARN_NOTE, 340, 380)] + grouped(LEARN, learn_subject()),
    ),
    dict(
        name="2_two_stage_generation",
        groups=[STAGE1, STAGE2],
        layout=[["about", "stage1"], ["stage2"]],
        nodes=[note("about", 0, 0, TWO_STAGE_NOTE, 360, 420)]
        + grouped(STAGE1, stage1())
        + grouped(STAGE2, stage2(col=4)),
    ),
    dict(
        name="3_whole_pipeline",
        groups=[LEARN, STAGE1, STAGE2],
        layout=[["about", "learn"], ["stage1", "stage2"]],
        nodes=[note("about", 0, 0, WHOLE_NOTE, 340, 380)]
        + grouped(LEARN, learn_subject())
        + grouped(STAGE1, stage1(col=1, row=2.6, checkpoint=False))
        + grouped(STAGE2, stage2(col=5, row=2.6, lora_link=("train", 0), token_link=("picker", 0))),
    ),
    dict(
        name="4_two_subjects",
        groups=[STAGE1, FIND, SUBJECT_A, SUBJECT_B],
        layout=[["about", "stage1", "find"], ["subject_a", "subject_b"]],
        nodes=[note("about", 0, 0, TWO_SUBJECTS_NOTE, 360, 420)]
        + grouped(STAGE1, stage1(scene=TWO_SCENE))
        + grouped(FIND, _find)
        + grouped(SUBJECT_A, _subject_a)
        + grouped(SUBJECT_B, _subject_b),
    ),
    dict(
        name="5_sam3_two_stage_comfyui_0.33",
        groups=[STAGE1, SAM3_FIND, STAGE2],
        requires_comfyui="0.33.0",
        layout=[["about", "stage1"], ["sam3", "stage2"]],
        nodes=[note("about", 0, 0, SAM3_NOTE, 360, 420)]
        + grouped(STAGE1, stage1())
        + grouped(SAM3_FIND, sam3_find())
        + grouped(STAGE2, sam3_stage2(col=4)),
    ),
]


def with_model_downloads(spec):
    """The spec with properties.models on every node whose widget names a file of MODEL_DOWNLOADS."""
    nodes = []
    for node in spec["nodes"]:
        models = [
            dict(name=value, url=MODEL_DOWNLOADS[value][0], directory=MODEL_DOWNLOADS[value][1])
            for value in node.get("widgets", {}).values()
            if isinstance(value, str) and value in MODEL_DOWNLOADS
        ]
        nodes.append(dict(node, properties=dict(models=models)) if models else node)
    return dict(spec, nodes=nodes)


WORKFLOWS = [with_model_downloads(spec) for spec in WORKFLOWS]


# Subgraph blueprints (subgraphs/<name>.json): ready-made nodes in ComfyUI 0.33's node library, each the stage-2
# nodes of a built workflow converted by the frontend, with the widgets a user sets exposed as inputs.
BLUEPRINTS = [
    dict(
        name="Insert Subject (Image Alchemy)",
        workflow="2_two_stage_generation",
        types=[
            "ImageAlchemy_GroundingDinoLoader",
            "ImageAlchemy_SAMLoader",
            "ImageAlchemy_GroundedSAMMask",
            "ImageAlchemy_DecayBlur",
            "ImageAlchemy_LoRAImg2ImgInsert",
        ],
        description=(
            "Stage 2 of Image Alchemy in one node: finds the subject named by `prompt` in the scene (GroundingDINO + "
            "SAM), blurs it with the exponential-decay blur and repaints the blurred region with the subject LoRA "
            "and the token prompt (`positive`). Outside the repaint region the result is the scene, bit for bit."
        ),
        category="Image Alchemy",
        searchAliases=["insert subject", "image alchemy", "grounded sam", "decay blur", "subject lora"],
        inputLabels={"image": "scene"},
        exposed=[
            ("ImageAlchemy_GroundedSAMMask", "prompt"),
            ("ImageAlchemy_LoRAImg2ImgInsert", "lora_name"),
            ("ImageAlchemy_LoRAImg2ImgInsert", "denoise"),
        ],
    ),
]
