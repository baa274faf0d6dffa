"""Catena: the shared core of the IPTV operator back end."""

__version__ = "0.1.0"
