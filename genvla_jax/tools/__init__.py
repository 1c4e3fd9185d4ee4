"""Command-line tools: logits (import debugging / numerics checks), param_count, export_hf."""
