"""worldmodels: latent world models learned from pixels.

Conventions used everywhere in the toolkit (documented once, here):

* Tensors are **batch-major**: sequences are ``(B, T, ...)``.
* Images are ``uint8`` ``(..., H, W, 3)`` on disk, in replay and in batches; a model converts them to
  float ``(..., 3, H, W)`` in ``[-0.5, 0.5]`` in its first step (``encoders.pixels.to_float``).
* Time step ``t`` of an episode holds ``image[t]``, the ``action[t]`` that *led to* that image (zeros at
  the first step), the ``reward[t]`` received on that transition, and the flags ``is_first[t]``,
  ``is_last[t]``, ``is_terminal[t]``. This is the PlaNet / DreamerV1 convention.
* In batches, discrete actions are one-hot float vectors; video without actions has zero-width actions
  ``(B, T, 0)``.
"""

__version__ = "0.1.0"
