"""Placeholder module: its nodes arrive with their issue. Registers nothing yet."""
NODES = []
