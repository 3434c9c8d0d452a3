"""Slack: identifiers, escaping, pure card builders, the bolt app and its handlers."""
