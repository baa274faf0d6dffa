"""The subscriber client API (docs/api.md): what the subscribers' apps and players call.

Paths live under :data:`PREFIX`, outside the Management API's base path.
"""

PREFIX = "/client/api/v1"
TAG = "Client API"
