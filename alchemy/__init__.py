"""Image Alchemy's algorithms as plain functions (torch / numpy / cv2). Imports no ComfyUI code."""
