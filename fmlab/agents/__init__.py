"""Multimodal web agents in an offline shop, for adversarial-image attacks (paper 3).

Placeholder __init__ while the module is built.
"""
