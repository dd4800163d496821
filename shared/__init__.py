"""jitgate: just-in-time, time-boxed, approval-gated access to cloud resources."""
