"""The toy world's detectors: a tiny GroundingDINO (transformers' GroundingDinoForObjectDetection, a Hugging Face
folder) and a tiny Segment Anything (segment-anything's classes, a safetensors state dict), trained on the world's
pictures with the class words as prompts, so GroundedSAMMask finds "ball", "cube", … in toy scenes.

- GroundingDINO: its own loss (transformers' Hungarian matching, focal + L1 + GIoU, auxiliary and two-stage
  encoder terms) on 64 px pictures with one or two objects; the caption is the four class words, or (three batches
  in four) one of them, as the pack prompts ("ball."), with half the batch's pictures showing its class and half not.
  The tokenizer is a BERT word-piece vocabulary of the world's words with bert-base-uncased's ids for [CLS],
  [SEP], "." and "?": transformers' GroundingDINO finds phrase boundaries by those ids.
- SAM: box prompts (the drawn object's box, jittered as a detector's would be) → the object's mask; every one of
  the three multimask hypotheses learns the object (focal 20 : dice 1, as SAM was trained) and the IoU head its
  hypothesis' IoU: the world's objects are never ambiguous, and the pack picks among the hypotheses by box IoU.

Both train from seeded starts, one torch thread, the same bytes on the same machine (toy_world/train.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import pack_module, world

log = logging.getLogger("toy_world")

DINO_FOLDER, SAM_FILE = "grounding_dino", "sam.safetensors"
# bert-base-uncased's ids of the tokens transformers' GroundingDINO treats as phrase delimiters.
SPECIAL_IDS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103, ".": 1012, "?": 1029}
WORDS = sorted(world.VOCABULARY | {"toy", "the", "and", ","})
IMAGE_MEAN, IMAGE_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # GroundingDINO's image processor
MAX_TEXT = 16


def vocabulary() -> list[str]:
    """BERT's layout: [PAD], [unused…], [UNK], [CLS], [SEP], [MASK], the world's words, … '.' at 1012, '?' at 1029."""
    vocab = [f"[unused{i}]" for i in range(1030)]
    for token, index in SPECIAL_IDS.items():
        vocab[index] = token
    for offset, word in enumerate(WORDS):
        vocab[104 + offset] = word
    return vocab


def tokenizer(folder: Path):
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = vocabulary()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)


def dino_config():
    from transformers import BertConfig, GroundingDinoConfig, SwinConfig

    text = BertConfig(
        vocab_size=len(vocabulary()),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    swin = SwinConfig(
        image_size=world.SIZE, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4], window_size=4,
        out_indices=[2, 3, 4],
    )  # fmt: skip
    return GroundingDinoConfig(
        backbone_config=swin,
        text_config=text,
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        num_queries=10,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_n_points=2,
        decoder_n_points=2,
        num_feature_levels=3,  # a 4th level would be 1×1 at 64 px, where GroupNorm(32) has one value per group
        max_text_len=MAX_TEXT,
        auxiliary_loss=True,
    )


# --- data ----------------------------------------------------------------------------------------------------
def scene(rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
    """A world picture with one object, or (half the time) a second of another class drawn beside it."""
    first = world.sample(rng)
    image, objects = first.image.copy(), [(first.thing.cls, first.mask > 0)]
    if rng.random() < 0.5:
        other = world.random_thing(rng, world.CLASSES[rng.integers(len(world.CLASSES))])
        second, mask = world.render(other, first.background, rng)
        mask = mask > 0
        grown = torch.from_numpy(objects[0][1].astype(np.float32))[None, None]
        near = F.max_pool2d(grown, 5, 1, 2)[0, 0].numpy() > 0
        if not (mask & near).any():
            image[mask] = second[mask]
            objects.append((other.cls, mask))
    return image, objects


def box_of(mask: np.ndarray) -> tuple[float, float, float, float]:
    """x0 y0 x1 y1 in pixels (edges) of a bool mask."""
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def scenes(count: int, seed: int):
    rng = np.random.default_rng(seed)
    return [scene(rng) for _ in range(count)]


def to_pixels(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0


def soften(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    from .measure import soften as measure_soften  # the measuring net's: decoded pictures are softer

    return measure_soften(x, gen)


# --- GroundingDINO -------------------------------------------------------------------------------------------
def train_grounding_dino(folder: Path, steps: int, seed: int, batch: int = 16) -> None:
    from transformers import GroundingDinoForObjectDetection, GroundingDinoImageProcessor, GroundingDinoProcessor

    from .train import warmup_cosine

    torch.manual_seed(seed)  # transformers initialises its weights from the global generator
    model = GroundingDinoForObjectDetection(dino_config())
    # Words told apart from the start, as a pretrained BERT tells them: at BERT's initial 0.02 the four class words
    # came out of the text encoder 0.5 % apart after 1 000 steps, and present and absent classes scored the same.
    torch.nn.init.normal_(model.model.text_backbone.embeddings.word_embeddings.weight, std=1.0)
    folder = Path(folder)
    tok = tokenizer(folder)
    data = scenes(4000, seed + 1)
    pixels = to_pixels([image for image, _ in data])
    mean, std = torch.tensor(IMAGE_MEAN)[:, None, None], torch.tensor(IMAGE_STD)[:, None, None]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(steps, floor=0.05))
    gen = torch.Generator().manual_seed(seed)
    showing = {c: [i for i, (_, objects) in enumerate(data) if any(n == c for n, _ in objects)] for c in world.CLASSES}
    lacking = {c: sorted(set(range(len(data))) - set(showing[c])) for c in world.CLASSES}
    model.train()
    for step in range(steps):
        # One caption for the whole batch: transformers' GroundingDINO loss offsets the class labels of the batch's
        # i-th picture by the i-th picture's own label count (not the count before it), which picks the right
        # label map only when every picture has the same caption.
        phrases = caption_classes(gen)
        if len(phrases) > 1:
            index = torch.randint(0, len(data), (batch,), generator=gen).tolist()
        else:  # half the batch shows the word's class, half does not: "ball." must also learn "not here"
            index = pick(showing[phrases[0]], batch // 2, gen) + pick(lacking[phrases[0]], batch - batch // 2, gen)
        labels = []
        for i in index:
            targets = [(phrases.index(name), box_of(mask)) for name, mask in data[i][1] if name in phrases]
            boxes = torch.tensor([b for _, b in targets], dtype=torch.float32).reshape(-1, 4)
            labels.append(
                {
                    "class_labels": torch.tensor([p for p, _ in targets], dtype=torch.long),
                    "boxes": corners_to_centre(boxes),
                }
            )
        text = tok([" . ".join(phrases) + " ."] * len(index), return_tensors="pt")
        x = (soften(pixels[index], gen) - mean) / std
        out = model(
            pixel_values=x,
            input_ids=text["input_ids"],
            attention_mask=text["attention_mask"],
            token_type_ids=text["token_type_ids"],
            pixel_mask=torch.ones(len(index), world.SIZE, world.SIZE, dtype=torch.long),
            labels=labels,
        )
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            log.info("grounding dino step %d/%d loss %.4f", step + 1, steps, out.loss.item())
    model.eval()
    model.save_pretrained(str(folder))
    # The toy world's pictures are 64 px: the processor keeps them at that size (the released one resizes to 800).
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessor(
            size={"shortest_edge": world.SIZE, "longest_edge": 2 * world.SIZE},
            image_mean=list(IMAGE_MEAN),
            image_std=list(IMAGE_STD),
        ),
        tokenizer=tok,
    )
    processor.save_pretrained(str(folder))


def pick(pool: list[int], count: int, gen: torch.Generator) -> list[int]:
    """``count`` draws (with replacement) from ``pool``."""
    return [pool[k] for k in torch.randint(0, len(pool), (count,), generator=gen).tolist()]


# The share of batches captioned with all four class words; the others get one word, and half their pictures show
# its class and half do not: "ball." is what the pack sends, and it must learn "not here" as much as "here".
FOUR_WORD_SHARE = 0.25


def caption_classes(gen: torch.Generator) -> list[str]:
    """The class words of a batch's caption: all four in a random order (GroundingDINO's training captions list the
    categories; a phrase attends only within itself, so a word reads as it does alone), or one word."""
    if torch.rand((), generator=gen) < FOUR_WORD_SHARE:
        return [world.CLASSES[k] for k in torch.randperm(len(world.CLASSES), generator=gen).tolist()]
    return [world.CLASSES[int(torch.randint(0, len(world.CLASSES), (), generator=gen))]]


def corners_to_centre(boxes: torch.Tensor) -> torch.Tensor:
    """x0 y0 x1 y1 pixels → cx cy w h in 0..1 (GroundingDINO's targets)."""
    x0, y0, x1, y1 = (boxes / world.SIZE).unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], -1)


# --- SAM -----------------------------------------------------------------------------------------------------
def sam_spec():
    """A tiny SAM: 64 px input in 4 px patches (a 16×16 embedding, masks at 64×64), one windowed and one global
    block. The decoder's 8 heads are what every released SAM uses (the loader cannot read them from shapes)."""
    return pack_module("alchemy.sam").SamSpec(
        embed_dim=48, depth=2, num_heads=2, global_attn_indexes=(1,), img_size=world.SIZE, patch_size=4,
        window_size=8, out_chans=32, mask_in_chans=8, decoder_depth=2, decoder_mlp_dim=64, iou_head_hidden_dim=32,
    )  # fmt: skip


def _focal(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    return ((alpha * target + (1 - alpha) * (1 - target)) * ce * (1 - p_t) ** gamma).flatten(-2).mean(-1)


def _dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    prob = logits.sigmoid().flatten(-2)
    target = target.flatten(-2)
    return 1 - (2 * (prob * target).sum(-1) + 1) / (prob.sum(-1) + target.sum(-1) + 1)


def jitter(box: torch.Tensor, gen: torch.Generator, spread: float = 0.2) -> torch.Tensor:
    """SAM's box-prompt noise: each edge moved by a normal draw of std ``spread``/2 of the box's side (10 %, as SAM)."""
    w, h = box[2] - box[0], box[3] - box[1]
    noise = torch.randn(4, generator=gen) * spread / 2 * torch.stack([w, h, w, h])
    return (box + noise).clamp(0, world.SIZE)


def train_sam(path: Path, steps: int, seed: int, batch: int = 16) -> None:
    from .models import save_tensors
    from .train import warmup_cosine

    torch.manual_seed(seed)
    sam = pack_module("alchemy.sam").build_sam(sam_spec())
    data = scenes(4000, seed + 1)
    pixels = to_pixels([image for image, _ in data])
    masks = [[torch.from_numpy(mask.astype(np.float32)) for _, mask in objects] for _, objects in data]
    boxes = [[torch.tensor(box_of(mask.numpy() > 0)) for mask in ms] for ms in masks]
    opt = torch.optim.AdamW(sam.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(steps, floor=0.05))
    gen = torch.Generator().manual_seed(seed)
    sam.train()
    for step in range(steps):
        index = torch.randint(0, len(data), (batch,), generator=gen).tolist()
        x = sam.preprocess(soften(pixels[index], gen) * 255.0)
        embeddings = sam.image_encoder(x)
        dense_pe = sam.prompt_encoder.get_dense_pe()
        loss = 0.0
        for row, i in enumerate(index):
            k = int(torch.randint(0, len(masks[i]), (), generator=gen))
            sparse, dense = sam.prompt_encoder(points=None, boxes=jitter(boxes[i][k], gen)[None], masks=None)
            logits, iou_pred = sam.mask_decoder(
                image_embeddings=embeddings[row : row + 1],
                image_pe=dense_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=True,
            )
            target = masks[i][k][None, None].expand_as(logits)
            with torch.no_grad():
                hard = logits > 0
                iou = (hard & (target > 0)).flatten(-2).sum(-1) / (hard | (target > 0)).flatten(-2).sum(-1).clamp(min=1)
            loss = loss + (20 * _focal(logits, target) + _dice(logits, target)).mean() + F.mse_loss(iou_pred, iou)
        loss = loss / len(index)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(sam.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            log.info("sam step %d/%d loss %.4f", step + 1, steps, loss.item())
    sam.eval()
    save_tensors(path, sam.state_dict(), {"toy_world.seed": str(seed)})  # fp16 storage, as the other toy files


# --- measuring -----------------------------------------------------------------------------------------------
def box_iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0.5, b > 0.5
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 0.0


# Held-out pictures: a seed no training stage draws from.
HELD_OUT_SEED = 40_000
# GroundedSAMMask's settings in the shipped workflow (scripts/workflow_specs.py), grow and feather off: the mask
# measured is SAM's.
NODE_SETTINGS = dict(box_threshold=0.3, text_threshold=0.25, area_penalty=0.1, max_objects=1, on_empty="empty mask")
# What the demo runs the toy GroundingDINO at: its best box is on the picture's object (held-out recall 0.88 here),
# but it scores present and absent class words alike (~0.3), around the workflow's 0.3.
TOY_THRESHOLD = 0.2


def load(folder: Path):
    """(GroundingDINO, SAM) from a toy-world models folder, by the pack's own loaders."""
    grounding, sam_ops = pack_module("alchemy.grounding"), pack_module("alchemy.sam")
    return grounding.load_grounding_dino(Path(folder) / DINO_FOLDER), sam_ops.load_sam(Path(folder) / SAM_FILE)


def segment(detector, sam, image: np.ndarray, prompt: str, **settings) -> tuple[np.ndarray, list]:
    """GroundedSAMMask's computation on one uint8 picture (NODE_SETTINGS, updated by ``settings``): (H×W mask,
    the kept boxes as x0 y0 x1 y1)."""
    grounded_sam = pack_module("alchemy.grounded_sam")
    masks, results = grounded_sam.segment_batch(
        torch.from_numpy(image).float()[None] / 255.0, detector, sam, prompt, **{**NODE_SETTINGS, **settings}
    )
    return masks[0].numpy(), [results[0].boxes[i].tolist() for i in results[0].kept]


def detection_figures(
    detector, sam, count: int = 64, seed: int = HELD_OUT_SEED, threshold: float | None = None
) -> dict[str, float]:
    """On ``count`` held-out world pictures (one object each), prompted with the object's class word, at the
    workflow's thresholds (``threshold``: box and text threshold both at that value, names suffixed _at_<it>):
    toy_detect_box_recall_at_0_5: share whose object gets a kept box with IoU ≥ 0.5 with its drawn box;
    toy_detect_mask_iou: mean IoU of GroundedSAMMask's mask with the drawn object (0 when nothing is found);
    toy_detect_false_positive_rate: share of the pictures prompted with a class they do not show that get a box."""
    settings = {} if threshold is None else {"box_threshold": threshold, "text_threshold": threshold}
    hits, ious, false = [], [], []
    rng = np.random.default_rng(seed + 1)
    for sample in world.dataset(count, seed):
        mask, boxes = segment(detector, sam, sample.image, sample.thing.cls, **settings)
        truth = box_of(sample.mask > 0)
        hits.append(any(box_iou(b, truth) >= 0.5 for b in boxes))
        ious.append(mask_iou(mask, sample.mask))
        other = [c for c in world.CLASSES if c != sample.thing.cls][rng.integers(len(world.CLASSES) - 1)]
        false.append(bool(segment(detector, sam, sample.image, other, **settings)[1]))
    suffix = "" if threshold is None else f"_at_{threshold:g}".replace(".", "_")
    return {
        f"toy_detect_box_recall_at_0_5{suffix}": float(np.mean(hits)),
        f"toy_detect_mask_iou{suffix}": float(np.mean(ious)),
        f"toy_detect_false_positive_rate{suffix}": float(np.mean(false)),
    }
