"""The Catena Management API and the subscriber client API."""
