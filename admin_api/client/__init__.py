"""The subscriber client API (API.md §9): what the subscribers' apps and players call.

Paths live under :data:`PREFIX`, outside the Management API's base path.
"""

PREFIX = "/client/api/v1"
TAG = "Client API"
