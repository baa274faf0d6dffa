"""The side-by-side throughput harness for the authorization gateway (``make bench-auth``).

Pieces: ``dataset`` (the data set, COPY into a fresh database), ``request_mix``
(the pre-built Flussonic requests and their expected answers), ``pool.lua`` (the
wrk script that cycles through them), the servers measured beside authgate
(``hello_aiohttp``, ``bare_protocol``, ``naive_backend``, nginx from ``targets``),
``verify`` (checks answers), ``wrk`` and ``harness`` (the driver).
"""
