"""Pretrained weights: safe checkpoint reading, adaptation, Hub and local-dir loading, save and push."""
