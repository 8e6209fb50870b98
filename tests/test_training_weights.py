"""Weights as files (training/weights.py) and the UNet built on the meta device (training/unet.py), on real
safetensors files of the tiny model."""

import json

import pytest
import torch
from image_alchemy.training.unet import LDM_PREFIX, diffusers_unet_config, unet_from_ldm
from image_alchemy.training.weights import CHECK_SAMPLES, file_matches, fingerprint, read_tensors, sample_positions
from safetensors import safe_open
from safetensors.torch import load_file, save_file


def test_fingerprint_follows_names_shapes_dtypes_and_sampled_values():
    gen = torch.Generator().manual_seed(0)
    sd = {"a.weight": torch.randn(64, 128, generator=gen), "a.bias": torch.randn(64, generator=gen)}
    base = fingerprint(sd)
    assert fingerprint({k: v.clone() for k, v in sd.items()}) == base and len(base) == 64
    assert fingerprint({"b.weight": sd["a.weight"], "a.bias": sd["a.bias"]}) != base
    assert fingerprint({**sd, "a.weight": sd["a.weight"].half()}) != base
    assert fingerprint({**sd, "a.weight": sd["a.weight"].reshape(128, 64)}) != base
    small = sd["a.bias"].clone()
    small[17] += 1e-3  # small tensors are hashed whole
    assert fingerprint({**sd, "a.bias": small}) != base
    big = sd["a.weight"].clone().reshape(-1)
    big[sample_positions(big.numel(), 1024)[5]] += 1e-3
    assert fingerprint({**sd, "a.weight": big.reshape(64, 128)}) != base


def test_fingerprint_never_materialises_a_tensor():
    """A 64 GB (expanded) tensor is fingerprinted from a few samples; a byte-by-byte hash would allocate it."""
    huge = torch.zeros(1).expand(2**34)
    assert len(fingerprint({"huge": huge})) == 64


def test_read_tensors_reads_a_prefix_cast_to_the_training_dtype(tiny_models, tmp_path):
    path = tmp_path / "ckpt.safetensors"
    unet = load_file(str(tiny_models["unet"]))
    save_file(
        {**{k: v.half() for k, v in unet.items()}, "first_stage_model.x": torch.ones(3), "steps": torch.tensor([7])},
        str(path),
    )
    got = read_tensors(path, LDM_PREFIX, torch.float32)
    assert set(got) == set(unet)
    assert all(got[k].dtype == torch.float32 and torch.equal(got[k], unet[k].half().float()) for k in unet)
    assert read_tensors(path, "steps", torch.float16)["steps"].dtype == torch.int64  # only floats are cast
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated"):
        read_tensors(path, LDM_PREFIX, torch.float32)


def test_file_matches_finds_the_prefix_and_refuses_changed_or_other_files(tiny_models, tmp_path):
    ldm = load_file(str(tiny_models["unet"]))
    memory = {k[len(LDM_PREFIX) :]: v.half() for k, v in ldm.items()}  # ComfyUI holding an fp32 file in fp16
    checkpoint = tmp_path / "checkpoint.safetensors"
    save_file({**ldm, "first_stage_model.x": torch.ones(3)}, str(checkpoint))
    assert file_matches(checkpoint, memory) == LDM_PREFIX
    unet_only = tmp_path / "unet.safetensors"
    save_file(memory, str(unet_only))
    assert file_matches(unet_only, memory) == ""
    key = next(iter(memory))
    changed = dict(memory)
    changed[key] = memory[key].clone().reshape(-1)
    changed[key][sample_positions(changed[key].numel(), CHECK_SAMPLES)[0]] += 1
    changed[key] = changed[key].reshape(memory[key].shape)
    assert file_matches(unet_only, changed) is None
    assert file_matches(unet_only, {**memory, "extra.weight": torch.ones(2)}) is None
    assert file_matches(tmp_path / "missing.safetensors", memory) is None


def test_the_unet_is_built_on_meta_and_takes_the_given_tensors(tiny_models):
    """No random UNet is allocated: every parameter is one of the tensors read from the file."""
    sd = load_file(str(tiny_models["unet"]))
    with safe_open(str(tiny_models["unet"]), framework="pt") as f:
        config = diffusers_unet_config(json.loads(f.metadata()["tiny_sdxl.unet_config"]))
    given = {t.data_ptr() for t in sd.values()}
    unet = unet_from_ldm(sd, config)
    assert all(p.data_ptr() in given for p in unet.parameters())
    assert not any(t.is_meta for t in unet.state_dict().values())
