"""streamproc: live sales KPIs from CRM events on Kafka."""

__version__ = "0.1.0"
