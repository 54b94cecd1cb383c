"""The operator console under ``/console/``: server-rendered pages for staff, kept live over
Channels (``controlplane.console.consumers``) from the events ``controlplane.console.events``
publishes."""
