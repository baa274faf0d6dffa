"""The Catena Management API, the subscriber client API and the web UI."""
