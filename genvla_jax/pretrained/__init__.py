"""Pretrained PaliGemma weights: import (HF safetensors, big_vision npz), export (HF)."""
