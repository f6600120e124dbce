"""Edge protection (issue 20): rate limits, access control and fault injection, each in its own module.
Machine-wide state (rate-limit quotas) lives in the arena of ``fsmfast.shared``."""
