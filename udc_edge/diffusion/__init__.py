"""Diffusion purification: DDIM schedule maths, the purifier network and sampler, and the one
purify -> restore pipeline."""
