"""Command line: score generated images against real subject images (DreamBooth's DINO / CLIP-I / CLIP-T, as in
paper 001 Table 1) plus BRISQUE, per prompt and overall.

    python -m evaluation --generated OUT_DIR --references SUBJECT_DIR \
        --dino models/eval_backbones/dino-vits16 --clip models/eval_backbones/clip-vit-large-patch14 \
        [--prompts prompts.csv | --prompt "a photo of sks dog"] [--generated-masks DIR] [--reference-masks DIR] \
        [--token sks --class-word dog] [--out DIR]

Prompts: ``--prompt`` (one for all), ``--prompts`` (CSV with columns file,prompt or JSON {file: prompt}), or a
``<image stem>.txt`` beside each generated image. Masks: files with the images' stems (any image format).
Writes ``per_image.csv``, ``summary.csv`` and ``metrics.json`` to ``--out`` (default GENERATED/evaluation) and
prints the summary table. Exit status 1 with a one-line reason on a problem the user can fix.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import sys
import tempfile
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
from PIL import Image

# Run from the pack root, so the pure package is importable as `alchemy` (never `nodes`, never ComfyUI).
from alchemy import backbones, metrics, quality

log = logging.getLogger("evaluation")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m evaluation", description=__doc__.split("\n\n")[0])
    p.add_argument("--generated", type=Path, required=True, help="folder of generated images")
    p.add_argument("--references", type=Path, required=True, help="folder of real subject images")
    p.add_argument("--dino", help="DINO ViT folder (transformers format, e.g. facebook/dino-vits16)")
    p.add_argument("--clip", help="CLIP folder (transformers format: CLIPModel + processor + tokenizer)")
    p.add_argument("--no-brisque", action="store_true", help="skip BRISQUE (no-reference quality)")
    prompts = p.add_mutually_exclusive_group()
    prompts.add_argument("--prompt", help="one prompt for every generated image")
    prompts.add_argument("--prompts", type=Path, help="CSV (file,prompt) or JSON {file: prompt}")
    p.add_argument("--generated-masks", type=Path, help="subject masks of the generated images (same stems)")
    p.add_argument("--reference-masks", type=Path, help="subject masks of the reference images (same stems)")
    p.add_argument("--margin", type=float, default=0.1, help="mask-box margin, as a fraction of the box size")
    p.add_argument("--token", help="rare token in the prompts; with --class-word, CLIP-T reads the class word")
    p.add_argument("--class-word", help="class word that replaces --token in the CLIP-T prompts")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--out", type=Path, help="output folder (default: GENERATED/evaluation)")
    args = p.parse_args(argv)
    if bool(args.token) != bool(args.class_word):
        p.error("--token and --class-word go together")
    if not args.dino and not args.clip and args.no_brisque:
        p.error("nothing to compute: give --dino and/or --clip, or leave BRISQUE on")
    if not 0.0 <= args.margin <= 2.0:
        p.error("--margin must be between 0 and 2")
    return args


def image_files(folder: Path, what: str) -> list[Path]:
    if not folder.is_dir():
        raise ValueError(f"{what} folder not found: {folder}")
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in the {what} folder {folder}")
    return files


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im.convert("RGB"))  # a writable copy (torch warns on read-only arrays)


def load_masks(folder: Path, images: list[Path], what: str) -> list[np.ndarray]:
    by_stem = {f.stem: f for f in image_files(folder, f"{what} mask")}
    missing = [f.name for f in images if f.stem not in by_stem]
    if missing:
        raise ValueError(
            f"{what} masks missing in {folder} for: {', '.join(missing[:5])}"
            f"{' …' if len(missing) > 5 else ''} (a mask needs the image's file stem)"
        )
    out = []
    for f in images:
        with Image.open(by_stem[f.stem]) as im:
            out.append(np.asarray(im.convert("L"), dtype=np.float32) / 255.0)
    return out


def read_prompts(args, files: list[Path]) -> list[str]:
    if args.prompt is not None:
        return [args.prompt] * len(files)
    if args.prompts is not None:
        table = _prompt_table(args.prompts)
        missing = [f.name for f in files if f.name not in table and f.stem not in table]
        if missing:
            raise ValueError(f"{args.prompts} has no prompt for: {', '.join(missing[:5])}")
        return [table.get(f.name, table.get(f.stem)) for f in files]
    sidecars = [f.with_suffix(".txt") for f in files]
    missing = [s.name for s in sidecars if not s.is_file()]
    if missing:
        raise ValueError(
            f"no prompts: give --prompt, --prompts FILE, or a .txt beside each image "
            f"(missing: {', '.join(missing[:5])})"
        )
    return [s.read_text(encoding="utf-8").strip() for s in sidecars]


def _prompt_table(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise ValueError(f"prompts file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        data = json.loads(text)
        if isinstance(data, list):
            data = {row["file"]: row["prompt"] for row in data}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object {{file: prompt}} or a list of {{file, prompt}}")
        return {str(k): str(v) for k, v in data.items()}
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows or not {"file", "prompt"} <= set(rows[0]):
        raise ValueError(f"{path}: expected a CSV with a header row naming the columns file and prompt")
    return {row["file"]: row["prompt"] for row in rows}


def pick_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _csv(rows, columns) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in _no_nan(asdict(r)).items()} for r in rows)
    return buf.getvalue()


def _no_nan(value):
    """NaN (the references' row with a single reference: no pairs) is not JSON: null instead."""
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return None if isinstance(value, float) and value != value else value


def write_reports(result: metrics.Evaluation, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"per_image": out / "per_image.csv", "summary": out / "summary.csv", "json": out / "metrics.json"}
    _write_atomic(paths["per_image"], _csv(result.images, [f.name for f in fields(metrics.ImageScore)]))
    _write_atomic(paths["summary"], _csv(result.summary, [f.name for f in fields(metrics.SummaryRow)]))
    _write_atomic(
        paths["json"], json.dumps(_no_nan(result.to_dict()), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    )
    return paths


def run(args) -> metrics.Evaluation:
    gen_files = image_files(args.generated, "generated")
    ref_files = image_files(args.references, "reference")
    prompts = read_prompts(args, gen_files)
    clip_t_prompts = [p.replace(args.token, args.class_word) for p in prompts] if args.token else None
    dino = backbones.DinoBackbone.load(args.dino) if args.dino else None
    clip = backbones.ClipBackbone.load(args.clip) if args.clip else None
    result = metrics.evaluate(
        [load_rgb(f) for f in gen_files],
        prompts,
        [load_rgb(f) for f in ref_files],
        dino=dino,
        clip=clip,
        quality=None if args.no_brisque else quality.brisque_scores,
        names=[f.name for f in gen_files],
        generated_masks=load_masks(args.generated_masks, gen_files, "generated") if args.generated_masks else None,
        reference_masks=load_masks(args.reference_masks, ref_files, "reference") if args.reference_masks else None,
        margin=args.margin,
        clip_t_prompts=clip_t_prompts,
        device=pick_device(args.device),
    )
    result.settings.update(
        generated=str(args.generated),
        references=str(args.references),
        clip_t_token=args.token,
        clip_t_class_word=args.class_word,
    )
    return result


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    try:
        result = run(args)
        paths = write_reports(result, args.out or args.generated / "evaluation")
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        sys.stderr.write(f"error: {e}\n")
        return 1
    sys.stdout.write(metrics.format_table(result.summary) + "\n")
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return 0
