"""Semantic segmentation with SyMPIE: DeepLab-V2 on Cityscapes, ACDC and Dark Zurich (segmentation/README.md)."""
