"""Model folders this pack reads from, registered with ComfyUI's folder_paths once at load."""

import os

import folder_paths

# Folder names other Grounded-SAM packs already use, so users can share the files.
MODEL_FOLDERS = ("grounding-dino", "sams")


def register_model_folders() -> None:
    for name in MODEL_FOLDERS:
        path = os.path.join(folder_paths.models_dir, name)
        known = folder_paths.folder_names_and_paths.get(name, ([], set()))[0]
        if path not in known:
            folder_paths.add_model_folder_path(name, path)
