"""Loopback emulators of Microsoft Graph and Slack that the bot's real client libraries talk to."""
