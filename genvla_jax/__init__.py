"""genvla_jax: vision-language-action policies that preserve pretrained representations (JAX/Flax)."""

__version__ = "0.1.0"
