"""Blender extension entry point: everything lives in ``addon/``; this file only delegates."""

from .addon import register, unregister

__all__ = ["register", "unregister"]
