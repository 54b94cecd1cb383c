"""The browser UI: templates and static assets, fed live by Channels."""
