"""Image encoders: ViT towers run on the same images, their patch features concatenated on the channel axis.

An encoder is a value, `Encoder(towers, dual)`; the module `ImageTowers` runs whatever towers it names:
  single tower   (SigLIP,)                        PaliGemma             z = img(o)
  fused towers   (DINOv2, SigLIP)                 Prismatic / OpenVLA   z = [img(o) | img_fused(o)]
  dual "copy"    a frozen copy of every tower     π0+ (D)               z = [sg(frozen copies(o)) | towers(o)]
  dual "split"   the second tower itself frozen   OpenVLA+              z = [img(o) | sg(img_frozen(o))]
sg = stop_gradient; a frozen tower has no optimizer state either (training/optimizer.py).

Parameter names (each tower's subtree, see vit.py) are the tower names: img, img_fused, img_frozen,
img_fused_frozen. ImageTowers shares its parent's scope, so the names sit at the top of the model's tree.
"""

import dataclasses
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from genvla_jax.models import vit


class Tower(NamedTuple):
  name: str  # the tower's parameter subtree
  vit: dict[str, Any]  # vit.ViT keyword arguments (a size from vit.VARIANTS)
  frozen: bool = False  # stop_gradient on its features; no optimizer state


def _dual_copy(towers: tuple[Tower, ...]) -> tuple[Tower, ...]:
  """A frozen copy of every tower, in front: [frozen copies | trained towers]."""
  return tuple(Tower(t.name + "_frozen", t.vit, frozen=True) for t in towers) + towers


def _dual_split(towers: tuple[Tower, ...]) -> tuple[Tower, ...]:
  """The second tower itself frozen (renamed img_frozen), in its place: [img | img_frozen]."""
  if len(towers) != 2:
    raise ValueError(f"dual encoder 'split' freezes the second of two towers; this encoder has {len(towers)}")
  return (towers[0], Tower("img_frozen", towers[1].vit, frozen=True))


DUAL = {"copy": _dual_copy, "split": _dual_split}


@dataclasses.dataclass(frozen=True)
class Encoder:
  towers: tuple[Tower, ...]  # the single model's towers, features concatenated in this order
  dual: str | None = None  # None, or a key of DUAL: how the dual encoder is made from the single one

  def __post_init__(self):
    if self.dual is not None and self.dual not in DUAL:
      raise ValueError(f"unknown dual encoder mode {self.dual!r}; one of: {', '.join(DUAL)}")
    if self.dual is not None:
      self.built()  # a mode that cannot apply to these towers fails here, at construction

  def built(self) -> tuple[Tower, ...]:
    """The towers the model builds, in feature order (the dual encoder's frozen ones included)."""
    return DUAL[self.dual](self.towers) if self.dual else self.towers

  def single(self) -> "Encoder":
    """The same towers without the dual encoder (what parameter surgery starts from)."""
    return dataclasses.replace(self, dual=None)

  @property
  def width(self) -> int:
    """Feature width F of the encoder's output [B,N,F]."""
    return sum(t.vit["width"] for t in self.built())

  def num_tokens(self, height: int, width: int) -> int:
    """Image tokens P of one camera's height x width frame (every tower has the first tower's patch size);
    several cameras run through the same towers, P tokens each (prefix_lm.cameras)."""
    patch = self.towers[0].vit["patch_size"]
    return (height // patch) * (width // patch)


def single(img: dict[str, Any]) -> tuple[Tower, ...]:
  return (Tower("img", img),)


def fused(img: dict[str, Any], img_fused: dict[str, Any]) -> tuple[Tower, ...]:
  return (Tower("img", img), Tower("img_fused", img_fused))


class ImageTowers(nn.Module):
  """images [B,H,W,3] in [-1,1] -> features [B,N,F]: the encoder's towers, concatenated per patch. Several
  cameras arrive folded into the batch ([B*C,H,W,3], prefix_lm.PrefixLM.encode_images)."""

  encoder: Encoder
  dtype: str = "float32"
  remat_policy: str = "none"
  scan_unroll: int = 1  # blocks per scan iteration (config.model.scan_unroll)
  attention_impl: str = "xla"  # models/attention.py IMPLS

  def setup(self):
    for tower in self.encoder.built():
      options = dict(
        dtype=self.dtype,
        remat_policy=self.remat_policy,
        scan_unroll=self.scan_unroll,
        attention_impl=self.attention_impl,
      )
      setattr(self, tower.name, vit.ViT(**tower.vit, **options))

  def __call__(self, images):
    features = []
    for tower in self.encoder.built():
      z = getattr(self, tower.name)(images)
      features.append(jax.lax.stop_gradient(z) if tower.frozen else z)
    return jnp.concatenate(features, axis=-1)
