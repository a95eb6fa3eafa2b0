"""Deployment material; `deploy.demo` is the local demo (`make demo`)."""
