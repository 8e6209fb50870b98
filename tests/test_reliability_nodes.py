"""Bad inputs for RareTokenPicker and SubjectMetrics through the real server: clear errors, server up, no file
written."""

import pytest
from comfy_execution.graph_utils import GraphBuilder
from support.reliability_helpers import expect_error, shaped_image


def picker(g, **overrides):
    loader = g.node("ImageAlchemyTest_TinySDXLLoader")
    values = dict(
        candidates="iklan sksks",
        vocabulary_scan=0,
        prompt_template="a photo of {token}",
        seeds_per_candidate=2,
        seed=0,
        width=64,
        height=64,
        steps=1,
        cfg=3.0,
        sampler_name="euler",
        scheduler="normal",
        use_cache=False,
    )
    values.update(overrides)
    node = g.node("ImageAlchemy_RareTokenPicker", model=loader.out(0), clip=loader.out(1), vae=loader.out(2), **values)
    g.node("PreviewAny", source=node.out(0))
    return node


def metrics(g, images=None, references=None, **overrides):
    values = dict(prompt="a photo of iklan dog", dino_model="none", clip_model="none", brisque=True, mask_margin=0.1)
    values.update(overrides)
    node = g.node(
        "ImageAlchemy_SubjectMetrics",
        images=images or shaped_image(g, batch=2),
        reference_images=references or shaped_image(g, batch=2),
        **values,
    )
    g.node("PreviewAny", source=node.out(0))
    return node


CASES = [
    (
        "picker: no candidate is one token",
        lambda g: picker(g, candidates="qzxjvkw zzqxv"),
        [r"RareTokenPicker: none of the candidates is a 4–5 letter word", r"vocabulary_scan above 0"],
    ),
    (
        "picker: empty candidate list",
        lambda g: picker(g, candidates="   "),
        [r"RareTokenPicker", r"(?i)candidates|vocabulary_scan"],
    ),
    (
        "picker: template without {token}",
        lambda g: picker(g, prompt_template="a photo of a dog"),
        [r"RareTokenPicker: prompt template .* has no \{token\} placeholder", r"a photo of \{token\}"],
    ),
    (
        "metrics: nothing to compute",
        lambda g: metrics(g, brisque=False),
        [r"SubjectMetrics: nothing to compute", r"turn BRISQUE on"],
    ),
    (
        "metrics: empty image batch",
        lambda g: metrics(g, images=shaped_image(g, batch=0)),
        [r"SubjectMetrics: no generated images to score"],
    ),
    (
        "metrics: 1-channel images",
        lambda g: metrics(g, images=shaped_image(g, batch=2, channels=1)),
        [r"SubjectMetrics", r"(?i)RGB|channel"],
    ),
]


@pytest.mark.parametrize("build, patterns", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_fails_clearly_and_writes_nothing(comfy, build, patterns):
    g = GraphBuilder()
    build(g)
    expect_error(comfy, g.finalize(), *patterns)


def test_metrics_brisque_needs_no_references(comfy):
    """Documented result: BRISQUE is a no-reference score, so an empty reference batch is fine without backbones."""
    g = GraphBuilder()
    node = metrics(g, references=shaped_image(g, batch=0))
    entry = comfy.run(g.finalize())
    assert entry["status"]["status_str"] == "success" and node.id in entry["outputs"]
