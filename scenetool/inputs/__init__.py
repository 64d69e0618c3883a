"""Inputs: walking the paths given into candidate images (walk) and decoding them (decode)."""
