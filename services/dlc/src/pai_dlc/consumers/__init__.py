"""dlc's event consumers: other services' events in, app use cases called in the inbox transaction."""
