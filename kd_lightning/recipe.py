"""A recipe's schedule at another length: ``recipe.epochs=30`` (or ``recipe.steps``) shortens a published schedule
and keeps its shape, every milestone at the same fraction of training (``${kd_scale:...}`` in ``conf/recipe/``)."""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import OmegaConf

from kd_lightning.errors import ConfigError


def scale_schedule(values: int | Sequence[int], length: int, published: int) -> int | list[int]:
    """``values`` (a milestone, a warm-up length, or a list of them) of a ``published``-long schedule, placed at the
    same fraction of a ``length``-long one: ``floor(v · length / published + 1/2)`` (half up, integer arithmetic
    so 150·30/240 = 18.75 → 19 exactly). At the published length every value is unchanged. Milestones that round
    to the same epoch stay repeated: ``MultiStepLR`` then applies its factor once per repeat, as the published
    schedule would have over those epochs."""
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ConfigError(f"a recipe's length must be a whole number >= 1 (recipe.epochs / recipe.steps), got {length!r}")
    scaled = [(2 * int(v) * length + published) // (2 * published) for v in (values if isinstance(values, Sequence)
                                                                             else [values])]
    return scaled if isinstance(values, Sequence) else scaled[0]


def _resolve(values, length, published):
    values = OmegaConf.to_container(values) if OmegaConf.is_config(values) else values
    return scale_schedule(values, length, published)


def register_resolver() -> None:
    """``${kd_scale:VALUES,LENGTH,PUBLISHED}``: :func:`scale_schedule` in a config."""
    if not OmegaConf.has_resolver("kd_scale"):
        OmegaConf.register_new_resolver("kd_scale", _resolve)


__all__ = ["register_resolver", "scale_schedule"]
