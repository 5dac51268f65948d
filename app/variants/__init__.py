"""
Faulty variants of the reference service: each adds one real shutdown mistake.

Every module exposes `app` and `FAILS`, the verdicts the mistake must fail under the standard
scenario (slow requests and background deliveries in flight, SIGTERM, a grace period). The
test suite runs each one and checks that exactly those verdicts fail.
"""
