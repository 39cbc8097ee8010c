"""DTLS 1.2 in pure Python on ``cryptography`` (sans-IO engine; see the DTLS issue)."""

from __future__ import annotations

__all__: list[str] = []
