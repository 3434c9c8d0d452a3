"""Mailwarden: catches remote email collection (T1114.002) and contains it through Slack."""

__version__ = "0.1.0"
