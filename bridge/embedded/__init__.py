"""xrfed's embedded headless XR scene (MuJoCo rendering, pyroomacoustics audio, scripted users).

``SIM_VERSION`` changes whenever the scene's output for a given scenario and seed changes (rendering, motion,
sensing models); caches of recorded data and checkpoints include it in their keys so they are never reused across
simulator versions.
"""

__all__ = ["SIM_VERSION"]

SIM_VERSION = 4  # 4: image-source order cap 20 -> 10
