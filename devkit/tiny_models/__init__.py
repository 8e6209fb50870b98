"""Tiny random models with the real SDXL architectures (tests, `make demo` and bench/ share them)."""
