"""Zero-shot CLIP classifier on open_clip (SPEC §7)."""
from classification.clip.zeroshot import build_clip_classifier

__all__ = ["build_clip_classifier"]
