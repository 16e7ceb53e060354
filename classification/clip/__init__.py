"""Zero-shot CLIP classifier on open_clip (``--clas clip``)."""
from classification.clip.zeroshot import build_clip_classifier

__all__ = ["build_clip_classifier"]
