"""Every `mailbot` command lives in this package; nothing outside it imports it."""

from mailbot.cli.main import main

__all__ = ["main"]
