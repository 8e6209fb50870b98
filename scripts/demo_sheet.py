"""The demo's summary sheet (demo_output/summary.png): its pictures enlarged so a person can see them, each panel
titled, rows headed, the whole sheet labelled with the models that made it. Pillow only."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

BACKGROUND, INK, MUTED, BANNER = (255, 255, 255), (20, 20, 20), (90, 90, 90), (200, 30, 30)
GAP = 12


def _font(size: int):
    return ImageFont.load_default(size=size)


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    lines = [""]
    for word in text.split():
        trial = f"{lines[-1]} {word}".strip()
        if lines[-1] and draw.textlength(trial, font=font) > width:
            lines.append(word)
        else:
            lines[-1] = trial
    return lines


def _text_block(text: str, width: int, size: int, colour=INK, background=BACKGROUND) -> Image.Image:
    """``text`` wrapped to ``width`` px."""
    font = _font(size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines = _wrap(probe, text, font, width - 8)
    line_height = size + 4
    block = Image.new("RGB", (width, line_height * len(lines) + 6), background)
    draw = ImageDraw.Draw(block)
    for k, line in enumerate(lines):
        draw.text((4, 3 + k * line_height), line, fill=colour, font=font)
    return block


def panel(image: Image.Image, title: str, height: int) -> Image.Image:
    """``image`` enlarged (nearest: the pixels stay as the model made them) to ``height`` px, ``title`` above it."""
    scale = height / image.height
    shown = image.convert("RGB").resize((max(1, round(image.width * scale)), height), Image.NEAREST)
    heading = _text_block(title, max(shown.width, 160), 15)
    out = Image.new("RGB", (heading.width, heading.height + shown.height), BACKGROUND)
    out.paste(heading, (0, 0))
    out.paste(shown, (0, heading.height))
    return out


def _row(panels: list[Image.Image]) -> Image.Image:
    height = max(p.height for p in panels)
    row = Image.new("RGB", (sum(p.width for p in panels) + GAP * (len(panels) - 1), height), BACKGROUND)
    x = 0
    for p in panels:
        row.paste(p, (x, 0))
        x += p.width + GAP
    return row


def sheet(label: str, note: str, sections: list[tuple[str, list[Image.Image], str]]) -> Image.Image:
    """The sheet: ``label`` in a banner on top, ``note`` under it, then per section (heading, panels, caption)."""
    rows = [(heading, _row(panels), caption) for heading, panels, caption in sections]
    width = max(900, max(r.width for _, r, _ in rows) + 2 * GAP)
    blocks = [_text_block(label, width, 26, colour=(255, 255, 255), background=BANNER)]
    blocks.append(_text_block(note, width - 2 * GAP, 14, colour=MUTED))
    for heading, row, caption in rows:
        blocks.append(_text_block(heading, width - 2 * GAP, 19))
        blocks.append(row)
        if caption:
            blocks.append(_text_block(caption, width - 2 * GAP, 14, colour=MUTED))
    out = Image.new("RGB", (width, sum(b.height for b in blocks) + GAP * (len(blocks) + 1)), BACKGROUND)
    y = GAP
    for k, block in enumerate(blocks):
        out.paste(block, (0 if k == 0 else GAP, y if k else 0))
        y += block.height + GAP
    return out
