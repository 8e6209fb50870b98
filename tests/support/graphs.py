"""Graph pieces many server tests share (ComfyUI's GraphBuilder)."""


def tiny_scene(g, text="a photo of a dog on a beach", *, width=64, height=64, batch_size=1, seed=0, steps=2):
    """Stage 1 on the tiny test model: loader → prompt → KSampler → VAEDecode. Returns (loader, decoded)."""
    loader = g.node("ImageAlchemyTest_TinySDXLLoader")
    pos = g.node("CLIPTextEncode", text=text, clip=loader.out(1))
    neg = g.node("CLIPTextEncode", text="", clip=loader.out(1))
    latent = g.node("EmptyLatentImage", width=width, height=height, batch_size=batch_size)
    sampled = g.node(
        "KSampler",
        model=loader.out(0),
        positive=pos.out(0),
        negative=neg.out(0),
        latent_image=latent.out(0),
        seed=seed,
        steps=steps,
        cfg=5.0,
        sampler_name="euler",
        scheduler="normal",
        denoise=1.0,
    )
    return loader, g.node("VAEDecode", samples=sampled.out(0), vae=loader.out(2))
