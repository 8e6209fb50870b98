"""`make toy-world` (python -m toy_world.train): trains the toy world's models from scratch on the CPU, seeded.

1. CLIP: SDXL's two tiny text encoders, seeded random, then trained jointly with the UNet (step 3);
2. VAE: TAESD, started as an exact 8× mean-colour encoder + upsampling decoder; the decoder is trained as the
   autoencoder's decoder on world images (the encoder stays that fixed map: its latents are then exact and free
   to compute for the whole data set, which training the encoder too would not allow on two cores);
3. UNet: the tiny SDXL UNet (64 base channels) trained text-to-image with the text encoders (ε-prediction,
   min-SNR-5 weighting, 10 % empty captions for guidance; the weights kept are the steps' moving average);
4. measuring net: a tiny ViT (transformers' save_pretrained folder, so DinoBackbone loads it) trained to read
   class, main colour, second colour and pattern (in a process of its own, beside steps 2 and 3);
5. subject LoRAs: each subject's 5 views, trained by training.trainer.train (plain, paper 001 settings);
6. detectors: a tiny GroundingDINO and a tiny SAM trained to find the world's objects by their class words
   (toy_world/detectors.py), in the measuring net's process after it (they too depend on their seeds only).
Writes the files into --out with manifest.json (sha256 of every file, the command, seconds per stage).
One torch thread by default: same bytes for the same seed on the same machine, and faster on a shared CPU.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import detectors, measure, models, training_names, world

log = logging.getLogger("toy_world")
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path(__file__).resolve().parent / "models"
COMMAND = "make toy-world  (= .venv/bin/python -m toy_world.train --out toy_world/models)"
# Steps per stage (on 2 cores: the measuring net trains in its own process beside the VAE and the UNet).
STEPS = {"vae": 1000, "unet": 2500, "measure": 3000, "lora": 300, "grounding_dino": 3000, "sam": 400}
CFG_DROP = 0.1
MIN_SNR = 5.0
EMA_DECAY = 0.999
LOG_FORMAT = "%(asctime)s %(name)s: %(message)s"


def warmup_cosine(steps: int, floor: float = 0.0, warmup: int = 50):
    """The learning-rate factor at a step: linear warm-up, then cosine decay from 1 to ``floor``."""
    return lambda s: min(1.0, (s + 1) / warmup) * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * s / steps)))


def to_pixels(samples) -> torch.Tensor:
    return torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).float() / 255.0


def train_vae(steps: int, seed: int):
    """Decoder training on 32 px crops aligned to the 8 px latent grid (a quarter of the cost of 64 px)."""
    vae = models.initial_taesd(seed)
    pool = to_pixels(world.dataset(768, seed + 100))
    latents = models.encode_mean_colour(pool)
    dec = vae.taesd_decoder
    opt = torch.optim.Adam(dec.parameters(), lr=5e-4)
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        index = torch.randint(0, len(pool), (8,), generator=gen)
        oy, ox = (torch.randint(0, 5, (2,), generator=gen) * 8).tolist()
        z = latents[index, :, oy // 8 : oy // 8 + 4, ox // 8 : ox // 8 + 4]
        z = z + 0.05 * torch.randn(z.shape, generator=gen)  # robust to a sampler's imperfect latents
        target = pool[index, :, oy : oy + 32, ox : ox + 32]
        out = dec(z)
        loss = F.l1_loss(out, target) + F.mse_loss(out, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 40 == 0 or step == steps - 1:
            log.info("vae step %d/%d loss %.4f", step + 1, steps, loss.item())
    return vae


def text_features(pipe, ids1: torch.Tensor, ids2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SDXL's conditioning as diffusers' encode_prompt computes it (penultimate hidden states of both encoders,
    the second one's projected pooled output), with gradients."""
    out1 = pipe.text_encoder(ids1, output_hidden_states=True)
    out2 = pipe.text_encoder_2(ids2, output_hidden_states=True)
    return torch.cat([out1.hidden_states[-2], out2.hidden_states[-2]], -1), out2.text_embeds


def token_ids(tokenizer, captions: list[str]) -> torch.Tensor:
    return tokenizer(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids


def train_unet(pipe, unet_ldm, steps: int, seed: int, batch: int = 64, ema_decay: float = EMA_DECAY):
    """Text-to-image training of the UNet and, jointly, the two text encoders (from their seeded random start:
    frozen random features were too alike across captions for the UNet to follow in this budget). The weights
    kept are the exponential moving average of the steps' weights, as diffusion training keeps them."""
    (TrainSettings,) = training_names("settings", "TrainSettings")
    (noise_scheduler,) = training_names("trainer", "noise_scheduler")

    samples = world.dataset(8000, seed + 200)
    latents = models.encode_mean_colour(to_pixels(samples))
    captions = sorted({s.caption for s in samples} | {""})
    ids1, ids2 = token_ids(pipe.tokenizer, captions), token_ids(pipe.tokenizer_2, captions)
    with torch.no_grad():  # the training computes the features the way the pipeline does
        check = text_features(pipe, ids1[:4], ids2[:4])
        reference = measure.encode_text(pipe, captions[:4])
        if not all(torch.allclose(a, b, atol=1e-5) for a, b in zip(check, reference)):
            raise RuntimeError("text features differ from the pipeline's encode_prompt")
    caption_index = torch.tensor([captions.index(s.caption) for s in samples])
    empty = captions.index("")
    scheduler = noise_scheduler(TrainSettings())
    unet = pipe.unet.train()
    encoders = (pipe.text_encoder.train(), pipe.text_encoder_2.train())
    params = list(unet.parameters())
    text_params = [p for e in encoders for p in e.parameters()]
    averaged = [p.detach().clone() for p in params + text_params]
    opt = torch.optim.AdamW(
        [{"params": params, "weight_decay": 1e-4}, {"params": text_params, "weight_decay": 0.0}], lr=1e-3
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(steps, floor=0.1))
    gen = torch.Generator().manual_seed(seed)
    time_ids = torch.tensor([[64, 64, 0, 0, 64, 64]] * batch, dtype=torch.float32)
    # Min-SNR-5 weighting (Hang et al. 2023): the high-noise steps, where a sampler starts, converge ~3× faster.
    snr = scheduler.alphas_cumprod / (1 - scheduler.alphas_cumprod)
    snr_weight = (snr.clamp(max=MIN_SNR) / snr).float()
    for step in range(steps):
        index = torch.randint(0, len(samples), (batch,), generator=gen)
        text = torch.where(torch.rand(batch, generator=gen) < CFG_DROP, empty, caption_index[index])
        noise = torch.randn((batch, *latents.shape[1:]), generator=gen)
        t = torch.randint(0, 1000, (batch,), generator=gen)
        flip = torch.rand(batch, generator=gen) < 0.5  # the world is mirror-symmetric
        x0 = torch.where(flip[:, None, None, None], latents[index].flip(-1), latents[index])
        # Each of the world's 41 captions once per step, not once per batch row (~10 % of a 32-channel step).
        embeds, pooled = text_features(pipe, ids1, ids2)
        pred = unet(
            scheduler.add_noise(x0, noise, t),
            t,
            embeds[text],
            added_cond_kwargs={"text_embeds": pooled[text], "time_ids": time_ids},
        ).sample
        loss = (F.mse_loss(pred, noise, reduction="none").mean((1, 2, 3)) * snr_weight[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params + text_params, 1.0)
        opt.step()
        sched.step()
        decay = min(ema_decay, (1 + step) / (10 + step))  # short memory at first: the start is no model
        with torch.no_grad():
            torch._foreach_lerp_(averaged, [p.detach() for p in params + text_params], 1 - decay)
        if step % 100 == 0 or step == steps - 1:
            log.info("unet step %d/%d loss %.4f", step + 1, steps, loss.item())
    with torch.no_grad():
        for p, mean in zip(params + text_params, averaged):
            p.copy_(mean)
    for module in (unet, *encoders):
        module.eval()
        for p in module.parameters():
            p.requires_grad_(False)
    return unet_ldm


def clip_file_tensors(pipe, seed: int) -> dict[str, torch.Tensor]:
    """The trained text encoders in ComfyUI's layout (the seeded file's keys; untrained ones keep their value)."""
    out = models.clip_state_dict(seed)
    for prefix, encoder in (("clip_l.transformer.", pipe.text_encoder), ("clip_g.transformer.", pipe.text_encoder_2)):
        own = encoder.state_dict()
        for key in out:
            if key.startswith(prefix):
                name = key[len(prefix) :]
                name = name if name in own else name.removeprefix("text_model.")
                if name in own:
                    out[key] = own[name].detach().clone().contiguous()
    return out


def train_measure_net(folder: Path, steps: int, seed: int, batch: int = 96) -> None:
    """The tiny ViT reading (class, main colour, second colour, pattern); its CLS feature is the embedding."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(seed)  # transformers initialises its weights from the global generator
    heads = measure.HEADS
    config = ViTConfig(
        image_size=world.SIZE,
        patch_size=8,
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=128,
        num_labels=sum(heads.values()),
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    net = ViTForImageClassification(config)
    samples = world.dataset(12000, seed + 300)
    pixels = to_pixels(samples)
    labels = torch.tensor([world.attribute_labels(s.thing) for s in samples])
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(steps))
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        index = torch.randint(0, len(samples), (batch,), generator=gen)
        x = measure.soften(pixels[index], gen)
        logits = net(pixel_values=(x - 0.5) / 0.5).logits
        loss, start = 0.0, 0
        for column, size in enumerate(heads.values()):
            loss = loss + F.cross_entropy(logits[:, start : start + size], labels[index, column])
            start += size
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            log.info("measuring net step %d/%d loss %.4f", step + 1, steps, loss.item())
    net.eval()
    folder.mkdir(parents=True, exist_ok=True)
    net.save_pretrained(str(folder))
    ViTImageProcessor(
        do_resize=True,
        size={"height": world.SIZE, "width": world.SIZE},
        do_normalize=True,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    ).save_pretrained(str(folder))


def train_detectors(out: Path, seed: int) -> dict[str, float]:
    """GroundingDINO, then SAM (toy_world/detectors.py); their seconds."""
    seconds = {}
    t0 = time.perf_counter()
    detectors.train_grounding_dino(out / detectors.DINO_FOLDER, STEPS["grounding_dino"], seed)
    seconds["grounding_dino"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    detectors.train_sam(out / detectors.SAM_FILE, STEPS["sam"], seed + 1)
    seconds["sam"] = time.perf_counter() - t0
    return seconds


def _side_process(out: Path, steps: dict[str, int], seed: int, threads: int, seconds) -> None:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    STEPS.update(steps)
    t0 = time.perf_counter()
    train_measure_net(out / "measure_vit", STEPS["measure"], seed + 3)
    seconds.put({"measure": time.perf_counter() - t0, **train_detectors(out, seed + 4)})


def start_side_stages(out: Path, seed: int, threads: int):
    """Trains the measuring net, then the detectors, in a spawned process (the same bytes as in this one: same
    seeds, same threads): they depend on nothing the other stages make."""
    context = multiprocessing.get_context("spawn")
    seconds = context.Queue()
    process = context.Process(  # daemon: ends with this process when another stage fails
        target=_side_process, args=(out, dict(STEPS), seed, threads, seconds), daemon=True
    )
    process.start()
    return process, seconds


def finish_side_stages(process, seconds) -> dict[str, float]:
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(
            f"the measuring net's or the detectors' training failed (exit code {process.exitcode}): see the log above"
        )
    return seconds.get()


def train_subject_loras(pipe, out: Path, steps: int, seed: int) -> None:
    (finish,) = training_names("job", "finish")
    (train,) = training_names("trainer", "train")
    (fingerprint,) = training_names("weights", "fingerprint")

    base_hash = fingerprint(pipe.unet.state_dict())
    for subject in world.SUBJECTS:
        settings = measure.lora_settings(subject, steps=steps, seed=seed)
        data = measure.subject_data(pipe, subject, settings)
        unet = measure.fresh_unet(out)
        result = train(unet, data, settings)
        finish(
            result,
            settings,
            data,
            output=out / f"lora_{subject.name}.safetensors",
            base_model_hash=base_hash,
            extra_metadata={"image_alchemy.source_model": "toy_world"},
        )
        log.info("subject LoRA %s: loss %.4f → %.4f", subject.name, result.losses[0], result.losses[-1])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_of(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file() and p.name != "manifest.json")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--comfyui",
        type=Path,
        default=ROOT / ".cache" / "comfyui",
        help="the ComfyUI folder whose classes build the models (make toy-world passes it)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", type=float, default=1.0, help="scale every stage's steps (smoke runs)")
    parser.add_argument(
        "--start",
        choices=["vae", "measure", "lora", "detectors", "manifest"],
        default="vae",
        help="start at this stage, keeping the files of the earlier ones (development runs)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    torch.set_num_threads(args.threads)
    STEPS.update({k: max(2, round(v * args.quick)) for k, v in STEPS.items()})
    torch.use_deterministic_algorithms(True)
    models.use_comfyui(args.comfyui)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    seconds = {}
    if args.start != "vae":  # the stages kept: their seconds as the run that made them measured
        seconds = json.loads((out / "manifest.json").read_text())["seconds"]
    started = time.perf_counter()
    measuring = None
    if args.start == "vae":  # the measuring net and the detectors depend on their seeds only: beside the others
        measuring = start_side_stages(out, args.seed, args.threads)
        t0 = time.perf_counter()
        models.save_clip(out / models.CLIP_FILE, args.seed + 1, {"toy_world.seed": str(args.seed + 1)})
        vae = train_vae(STEPS["vae"], args.seed + 2)
        models.save_tensors(out / models.VAE_FILE, vae.state_dict(), {"toy_world.seed": str(args.seed + 2)})
        seconds["vae"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        unet_ldm = models.initial_unet_ldm(args.seed)
        pipe = models.pipeline(out, args.comfyui, unet_ldm=unet_ldm)
        train_unet(pipe, unet_ldm, STEPS["unet"], args.seed)
        models.save_unet(out / models.UNET_FILE, unet_ldm, {"toy_world.seed": str(args.seed)})
        models.save_clip(
            out / models.CLIP_FILE,
            args.seed + 1,
            {"toy_world.seed": str(args.seed + 1)},
            tensors=clip_file_tensors(pipe, args.seed + 1),
        )
        seconds["unet"] = time.perf_counter() - t0
    if measuring is not None:
        seconds.update(finish_side_stages(*measuring))
    elif args.start == "measure":
        t0 = time.perf_counter()
        train_measure_net(out / "measure_vit", STEPS["measure"], args.seed + 3)
        seconds["measure"] = time.perf_counter() - t0
    if args.start in ("vae", "measure", "lora"):
        t0 = time.perf_counter()
        train_subject_loras(models.pipeline(out, args.comfyui), out, STEPS["lora"], args.seed)
        seconds["lora"] = time.perf_counter() - t0
    if args.start in ("measure", "lora", "detectors"):
        seconds.update(train_detectors(out, args.seed + 4))
    total = round(sum(seconds.values()), 1)
    for path in sorted(out.rglob("*.safetensors")):
        models.normalise(path)
    manifest = {
        "command": COMMAND,
        "seed": args.seed,
        "threads": args.threads,
        "torch": torch.__version__,
        "steps": STEPS,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "total_seconds": total if args.start != "vae" else round(time.perf_counter() - started, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "files": {str(p.relative_to(out)): sha256(p) for p in files_of(out)},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    log.info("toy world written to %s in %.0f s", out, manifest["total_seconds"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
