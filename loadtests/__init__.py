"""Load tests (locust): ``python -m loadtests.run`` or ``make loadtest``."""
