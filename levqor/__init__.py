"""Levqor: self-hosted, AI-native workflow automation."""

__version__ = "0.1.0"
